"""The words a user is found by (connector.search_words): pure, no database."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.search_words import (
    _EDGES,
    WORD_LENGTH,
    _email_words,
    _tokens,
    fold,
    profile_words,
    query_words,
    user_words,
)


def test_case_and_accents_fold_away() -> None:
    assert fold("Jiří DVOŘÁK") == "jiri dvorak"
    assert fold("Søren Łódź Straße Æbelø") == "soren lodz strasse aebelo"


def test_names_and_addresses_give_whole_words_and_their_parts() -> None:
    words = user_words("jd01", "Jiří Dvořák-Nováková", "Jiří", "Dvořák",
                       ["Jiri.Dvorak@Mail.Example.com"])
    assert words == {"jd01", "jiri.dvorak@mail.example.com", "mail.example.com",
                     "example.com", "com", "dvorak-novakova", "novakova"}
    # left out, because a longer word starts with them: jiri, dvorak, mail, example…


def test_a_name_of_punctuation_alone_has_no_words() -> None:
    assert user_words("---", None, None, None, []) == set()
    assert profile_words("@", "", {"emails": [{"value": "@"}], "name": "not a dict"}) == set()


def test_a_search_folds_its_words_longest_first_without_edge_punctuation() -> None:
    assert query_words("  Jiri   DVOŘÁK @example.com , ") == ["example.com", "dvorak", "jiri"]
    assert query_words("@ , ;") == []


@given(st.text(max_size=60), st.one_of(st.none(), st.text(max_size=60)),
       st.lists(st.text(max_size=40), max_size=3))
def test_every_word_of_a_search_for_a_users_own_words_finds_it(
        user_name: str, display: str | None, emails: list[str]) -> None:
    words = user_words(user_name, display, None, None, emails)
    assert all(0 < len(w) <= WORD_LENGTH for w in words)
    for text in (user_name, display or "", *emails):
        for q in query_words(text):
            assert any(w.startswith(q[:WORD_LENGTH]) for w in words), (q, words)


@given(st.from_regex(r"[a-zA-Z0-9._+'\-é]{0,12}@[a-zA-Z0-9.\-_ł]{0,16}", fullmatch=True)
       | st.text(alphabet="ab.@_- é\u00a0", max_size=16))
def test_an_address_gives_the_words_of_its_one_token_and_its_domains_suffixes(
        address: str) -> None:
    """An address without spaces takes a shortcut (its domain's words made once per
    domain); it must give what the general rule gives: the token whole and its parts,
    the local part, and every suffix of the domain."""
    folded = _EDGES.sub("", fold(address))
    local, _, domain = folded.rpartition("@")
    expected = _tokens(folded)
    if local and domain:
        labels = domain.split(".")
        expected |= {local} | {".".join(labels[i:]) for i in range(len(labels))}
    assert _email_words(address) == expected
