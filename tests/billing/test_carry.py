"""The kept end-of-month state: whatever a user's state, it reads back as it was."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from billing import carry
from billing.fold import UserState

names = st.text(min_size=0, max_size=40)
flags = st.booleans()
modules = st.frozensets(st.text(min_size=1, max_size=12), max_size=4)
frontline = st.one_of(st.just({}), st.dictionaries(
    st.sampled_from(["desklessPercent", "frontlineRole", "note"]),
    st.one_of(st.integers(0, 100), st.text(max_size=10)), min_size=1))
states = st.builds(UserState, user_name=names, exists=flags, active=flags, guest=flags,
                   external_guest=flags, own_modules=modules, groups=modules, invited=flags,
                   claimed=flags, frontline=frontline)


@given(states)
def test_every_state_reads_back_as_it_was(state: UserState) -> None:
    assert carry.decode(carry.encode(state)) == state


def test_the_compact_format_and_its_fallback() -> None:
    plain = UserState("a\x1fb@x.io", True, True, False, False, frozenset({"Hybrid"}),
                      frozenset({"g1", "g2"}), False, True, {"frontlineRole": "medical"})
    text = carry.encode(plain)
    assert text.startswith("2\x1f110001\x1fHybrid\x1fg1\x1eg2\x1f")
    assert text.endswith("a\x1fb@x.io")  # the name last: it may hold anything
    odd = UserState("c@x.io", True, True, own_modules=frozenset({"a\x1eb"}))
    assert carry.encode(odd).startswith("[1,")  # a separator in a module name: JSON
    assert carry.decode(carry.encode(odd)) == odd


def test_states_kept_by_earlier_closes_are_still_read() -> None:
    v1 = json.dumps([1, "u@x.io", True, False, True, False, ["Hybrid"], ["g"], True, False,
                     None])
    assert carry.decode(v1) == UserState("u@x.io", True, False, True, False,
                                         frozenset({"Hybrid"}), frozenset({"g"}), True,
                                         False, {})
    for unreadable in ("", None, "[9]", "{}", "not json", "2\x1f11\x1f", "[1,2]"):
        assert carry.decode(unreadable) is None


def test_frontline_values_json_alone_can_write_read_back_as_they_were() -> None:
    """The frontline attributes go through orjson unless it refuses them or writes null
    (which it does for NaN and infinities): those go through the standard encoder."""
    for value in (float("nan"), float("inf"), -float("inf"), 2**70, -(2**70), -0.0, 1e-7,
                  "\ud800", "Zoë 💡", None, [1, None, "x"], {"nested": True}):
        state = UserState("u@x.io", True, True, frontline={"desklessPercent": value})
        back = carry.decode(carry.encode(state))
        assert back is not None
        assert json.dumps(back.frontline) == json.dumps(state.frontline)
        assert type(back.frontline["desklessPercent"]) is type(value)
