"""Deep pages start from remembered positions; the pages must be exactly the OFFSET ones."""

from __future__ import annotations

import random

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector.models import User
from scim.anchors import PageAnchors
from tests.scim.factories import user
from tests.support.clients import ScimClient


def ids_in_order(session: Session, tenant_id: str) -> list[str]:
    session.rollback()
    return list(session.scalars(select(User.id).where(
        User.tenant_id == tenant_id, User.removed_at.is_(None)).order_by(User.id)))


def page(scim: ScimClient, start: int, count: int) -> tuple[int, list[str]]:
    body = scim.get(f"/Users?startIndex={start}&count={count}").json
    return body["totalResults"], [r["id"] for r in body["Resources"]]


def test_pages_stay_exact_across_reads_creates_and_deletes(scim: ScimClient,
                                                           session: Session) -> None:
    rng = random.Random(7)
    made = [scim.post("/Users", user()).json["id"] for _ in range(40)]
    for round_ in range(6):
        expected = ids_in_order(session, scim.tenant_id)
        # sequential, as an import does, then random, as the bench does
        starts = list(range(1, len(expected) + 2, 7)) + [rng.randint(1, len(expected) + 1)
                                                         for _ in range(10)]
        for start in starts:
            total, got = page(scim, start, 7)
            assert total == len(expected)
            assert got == expected[start - 1:start - 1 + 7], (round_, start)
        # change the list: positions shift, remembered anchors must not be used
        if round_ % 2 == 0:
            scim.post("/Users", user())
        else:
            victim = made.pop(rng.randrange(len(made)))
            assert scim.delete(f"/Users/{victim}").status_code == 204


def test_anchors_are_per_generation_and_bounded() -> None:
    anchors = PageAnchors(max_tenants=2, max_anchors=3)
    anchors.remember("t", 1, 10, "a")
    anchors.remember("t", 1, 20, "b")
    assert anchors.nearest("t", 1, 15) == (10, "a")
    assert anchors.nearest("t", 1, 25) == (20, "b")
    assert anchors.nearest("t", 1, 5) is None
    assert anchors.nearest("t", 2, 25) is None  # another generation: nothing known
    anchors.remember("t", 2, 30, "c")  # a new generation replaces the old positions
    assert anchors.nearest("t", 2, 25) is None and anchors.nearest("t", 2, 31) == (30, "c")
    for position in (40, 50, 60):
        anchors.remember("t", 2, position, "x")
    assert anchors.nearest("t", 2, 1000) == (50, "x")  # 60 dropped: at most 3 kept
    anchors.remember("u", 1, 1, "u1")
    anchors.remember("v", 1, 1, "v1")
    assert anchors.nearest("t", 2, 31) is None  # least recently used tenant evicted
    anchors.remember("t", -1, 1, "never")  # an unknown generation is never remembered
    assert anchors.nearest("t", -1, 1) is None


def test_huge_or_negative_paging_numbers_answer_a_page_not_a_500(scim: ScimClient) -> None:
    """A 20-digit startIndex overflowed the database's OFFSET (a 500); past the end is an
    empty page (RFC 7644 §3.4.2.4), and the connection stays usable for what follows."""
    for _ in range(3):
        scim.post("/Users", user())
    for query in ("startIndex=99999999999999999999", "startIndex=99999999999999999999&count=5",
                  "count=99999999999999999999", "startIndex=-99999999999999999999&count=-1",
                  "filter=userName%20pr&startIndex=99999999999999999999"):
        response = scim.get(f"/Users?{query}")
        assert response.status_code == 200, (query, response.json)
        assert response.json["totalResults"] == 3
    assert scim.get("/Users?startIndex=99999999999999999999").json["Resources"] == []
    assert scim.get("/Users?count=-1").json["Resources"] == []
    assert len(scim.get("/Users?startIndex=1&count=99999999999999999999").json["Resources"]) == 3
    assert scim.post("/.search", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:"
                                              "SearchRequest"],
                                  "startIndex": 10**30, "count": 2}).status_code == 200
