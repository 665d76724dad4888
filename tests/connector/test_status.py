"""The pure status rules, pinned by example and by property."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.status import Source, StatusState, TenantPolicy, idp_reports, initial_state

IDP = TenantPolicy(status_source="identity_provider")
CONNECTOR = TenantPolicy(status_source="connector")
INACTIVE_DEFAULT = TenantPolicy(scim_default_status="inactive")


def test_new_scim_user_gets_the_default_status() -> None:
    assert initial_state(IDP, Source.SCIM, True).active is True
    assert initial_state(INACTIVE_DEFAULT, Source.SCIM, True).active is False
    assert initial_state(INACTIVE_DEFAULT, Source.SCIM, None).active is False


def test_user_created_disabled_is_on_the_deleted_list() -> None:
    state = initial_state(IDP, Source.SCIM, False)
    assert (state.active, state.in_deleted_list) == (False, True)


def test_idp_disable_and_enable_move_the_user_on_and_off_the_deleted_list() -> None:
    state = initial_state(IDP, Source.SCIM, True)
    state = idp_reports(IDP, state, False)
    assert (state.active, state.in_deleted_list) == (False, True)
    state = idp_reports(IDP, state, True)
    assert (state.active, state.in_deleted_list) == (True, False)


def test_default_inactive_is_not_undone_by_a_repeated_active_true() -> None:
    state = initial_state(INACTIVE_DEFAULT, Source.SCIM, True)
    assert idp_reports(INACTIVE_DEFAULT, state, True).active is False


def test_connector_source_records_but_does_not_apply() -> None:
    state = initial_state(CONNECTOR, Source.SCIM, True)
    after = idp_reports(CONNECTOR, state, False)
    assert after.active is True and after.idp_active is False
    assert after.in_deleted_list is False


policies = st.builds(TenantPolicy, st.sampled_from(["identity_provider", "connector"]),
                     st.sampled_from(["active", "inactive"]), st.booleans())


@given(policies, st.one_of(st.none(), st.booleans()), st.lists(st.booleans(), max_size=12))
def test_idp_word_is_always_recorded_and_only_drives_status_when_allowed(
        policy: TenantPolicy, first: bool | None, words: list[bool]) -> None:
    state = initial_state(policy, Source.SCIM, first)
    for word in words:
        before = state
        state = idp_reports(policy, state, word)
        assert state.idp_active is word
        if policy.status_source == "connector":
            assert state.active == before.active
        elif word != before.idp_active:
            assert state.active is word
            assert state.in_deleted_list is (not word)
        else:
            assert state == StatusState(before.active, word, before.in_deleted_list)
    # The deleted list only ever holds inactive users.
    assert not (state.in_deleted_list and state.active)
