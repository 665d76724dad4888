"""The pure status rules, pinned by example and by property."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.status import (
    Source,
    StatusState,
    TenantPolicy,
    idp_drives_status,
    idp_reports,
    initial_state,
)

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


# -- admins and settings (issue 4's rules) ---------------------------------------------

from connector.status import (  # noqa: E402
    PAUSE_FIRST,
    SOURCE_FIRST,
    admin_may_set_status,
    admin_sets,
    source_switched,
)

PAUSED = TenantPolicy(provisioning_paused=True)
PAUSED_CONNECTOR = TenantPolicy(status_source="connector", provisioning_paused=True)


def test_admin_edits_of_provisioned_users_need_a_pause() -> None:
    assert admin_may_set_status(IDP, "scim", fed_by_entra_sync=False) is PAUSE_FIRST
    assert admin_may_set_status(PAUSED, "scim", fed_by_entra_sync=False) is None


def test_entra_fed_tenants_also_need_the_connector_as_status_source() -> None:
    assert admin_may_set_status(PAUSED, "entra_sync", fed_by_entra_sync=True) is SOURCE_FIRST
    assert admin_may_set_status(CONNECTOR, "entra_sync", fed_by_entra_sync=True) is PAUSE_FIRST
    assert admin_may_set_status(PAUSED_CONNECTOR, "entra_sync", fed_by_entra_sync=True) is None


def test_refusals_name_the_setting_to_change() -> None:
    assert PAUSE_FIRST.setting == "provisioning_paused" and "pause" in PAUSE_FIRST.reason
    assert SOURCE_FIRST.setting == "status_source" and "'connector'" in SOURCE_FIRST.reason


def test_users_created_by_an_admin_are_always_editable() -> None:
    for policy in (IDP, CONNECTOR, PAUSED, PAUSED_CONNECTOR):
        assert admin_may_set_status(policy, "admin", fed_by_entra_sync=True) is None


def test_admin_activation_restores_from_the_deleted_list() -> None:
    deleted = StatusState(active=False, idp_active=False, in_deleted_list=True)
    assert admin_sets(deleted, True) == StatusState(True, False, False)
    assert admin_sets(StatusState(True, True, False), False) == StatusState(False, True, False)


def test_switching_back_to_the_idp_applies_its_latest_word() -> None:
    kept = StatusState(active=True, idp_active=False, in_deleted_list=False)
    assert source_switched(IDP, kept) == StatusState(False, False, True)
    assert source_switched(CONNECTOR, kept) == kept
    unknown = StatusState(active=False, idp_active=None, in_deleted_list=False)
    assert source_switched(IDP, unknown) == unknown


ACTIONS = st.lists(st.one_of(
    st.tuples(st.just("idp"), st.booleans()),
    st.tuples(st.just("admin"), st.booleans()),
    st.tuples(st.just("pause"), st.booleans()),
    st.tuples(st.just("source"), st.sampled_from(["identity_provider", "connector"])),
), max_size=30)


@given(origin=st.sampled_from(["scim", "entra_sync", "admin"]), entra=st.booleans(),
       first=st.one_of(st.none(), st.booleans()), actions=ACTIONS)
def test_no_sequence_of_actions_breaks_the_rules(origin: str, entra: bool, first: bool | None,
                                                 actions: list[tuple[str, object]]) -> None:
    policy = TenantPolicy()
    source = Source.ADMIN if origin == "admin" else Source(origin)
    state = initial_state(policy, source, first)
    for kind, value in actions:
        before = state
        if kind == "idp":
            state = idp_reports(policy, state, bool(value))
            if not idp_drives_status(policy):
                assert state.active == before.active  # recorded, not applied
            assert state.idp_active == value
        elif kind == "admin":
            refusal = admin_may_set_status(policy, origin, entra)
            if refusal is None:
                state = admin_sets(state, bool(value))
                assert state.active == value
            else:
                assert origin != "admin"
                assert not policy.provisioning_paused or (entra and idp_drives_status(policy))
        elif kind == "pause":
            policy = TenantPolicy(policy.status_source, policy.scim_default_status, bool(value))
        else:
            policy = TenantPolicy(str(value), policy.scim_default_status,
                                  policy.provisioning_paused)
            state = source_switched(policy, state)
            if idp_drives_status(policy) and state.idp_active is not None:
                assert state.active == state.idp_active
        assert not (state.in_deleted_list and state.active), "on the deleted list yet active"
