"""Reads trust a checked token for a few seconds; writes always ask the database."""

from __future__ import annotations

import dataclasses
import datetime as dt

from flask import Flask
from sqlalchemy import Engine, update

from connector import tenants
from connector.app import create_app
from connector.config import Settings
from connector.db import make_sessionmaker
from connector.models import Tenant
from tests.scim.factories import user
from tests.support.clients import ScimClient, make_admin, make_tenant


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def app_with(settings: Settings, engine: Engine, seconds: int) -> tuple[Flask, Clock]:
    scim_settings = dataclasses.replace(settings.scim, token_cache_seconds=seconds)
    app = create_app(dataclasses.replace(settings, scim=scim_settings), engine=engine)
    clock = Clock()
    app.extensions["scim_token_cache"].clock = clock
    return app, clock


def rotate(engine: Engine, tenant_id: str, elsewhere: bool = False) -> str:
    """Rotate the tenant's SCIM token; `elsewhere`: as another process of the instance
    does (the command line, another worker), whose commit reaches this process only
    through the database."""
    with make_sessionmaker(engine)() as s:
        issued = tenants.rotate_token(s, tenant_id, dt.datetime.now(dt.UTC))
        if elsewhere:
            s.info.clear()  # the other process's caches forget, not this one's
        s.commit()
        return issued.token


def test_a_token_revoked_elsewhere_stops_writes_at_once_and_reads_when_the_cache_expires(
        settings: Settings, engine: Engine) -> None:
    app, clock = app_with(settings, engine, seconds=10)
    tenant_id, token = make_tenant(engine)
    scim = ScimClient(app.test_client(), token, tenant_id)
    uid = scim.post("/Users", user()).json["id"]
    assert scim.get(f"/Users/{uid}").status_code == 200  # now cached
    new_token = rotate(engine, tenant_id, elsewhere=True)
    assert scim.post("/Users", user()).status_code == 401
    assert scim.patch(f"/Users/{uid}", {}).status_code == 401
    assert scim.get(f"/Users/{uid}").status_code == 200  # within the 10 s
    clock.now += 10.5
    assert scim.get(f"/Users/{uid}").status_code == 401
    fresh = ScimClient(scim.client, new_token, tenant_id)
    assert fresh.get(f"/Users/{uid}").status_code == 200


def test_a_token_rotated_or_closed_here_stops_reading_at_once(
        settings: Settings, engine: Engine) -> None:
    """A leaked token is rotated away: it read the directory for another 10 seconds in
    the very process that rotated it (the cache still trusted it). Rotating or closing
    the tenant now empties that tenant's cache entries as it commits."""
    app, _ = app_with(settings, engine, seconds=10)
    tenant_id, token = make_tenant(engine)
    other_id, other_token = make_tenant(engine, "Other")
    scim = ScimClient(app.test_client(), token, tenant_id)
    other = ScimClient(app.test_client(), other_token, other_id)
    assert scim.get("/Users").status_code == 200  # now cached
    assert other.get("/Users").status_code == 200
    partner = make_admin(engine, "p@example.com")[1]
    api = app.test_client()
    auth = {"Authorization": f"Bearer {partner}"}
    rotated = api.post(f"/api/v1/tenants/{tenant_id}/scim-token", headers=auth)
    assert rotated.status_code == 201
    assert scim.get("/Users").status_code == 401
    fresh = ScimClient(scim.client, rotated.json["scimToken"], tenant_id)
    assert fresh.get("/Users").status_code == 200  # now cached
    assert api.post(f"/api/v1/tenants/{tenant_id}/close", headers=auth).status_code == 200
    assert fresh.get("/Users").status_code == 403
    assert other.get("/Users").status_code == 200  # another tenant's entry stays


def test_a_rolled_back_rotation_forgets_nothing(settings: Settings, engine: Engine) -> None:
    app, _ = app_with(settings, engine, seconds=10)
    tenant_id, token = make_tenant(engine)
    assert ScimClient(app.test_client(), token, tenant_id).get("/Users").status_code == 200
    with make_sessionmaker(engine)() as s:
        tenants.rotate_token(s, tenant_id, dt.datetime.now(dt.UTC))
        s.rollback()
        assert s.info == {}
    assert len(app.extensions["scim_token_cache"]._entries) == 1


def test_zero_seconds_turns_the_cache_off(settings: Settings, engine: Engine) -> None:
    app, _ = app_with(settings, engine, seconds=0)
    tenant_id, token = make_tenant(engine)
    scim = ScimClient(app.test_client(), token, tenant_id)
    assert scim.get("/Users").status_code == 200
    rotate(engine, tenant_id)
    assert scim.get("/Users").status_code == 401


def test_wrong_tokens_are_not_cached_and_the_cache_is_bounded(
        settings: Settings, engine: Engine) -> None:
    app, _ = app_with(settings, engine, seconds=10)
    cache = app.extensions["scim_token_cache"]
    cache.max_entries = 2
    client = app.test_client()
    for i in range(5):
        r = client.get("/scim/v2/Users", headers={"Authorization": f"Bearer nope{i}"})
        assert r.status_code == 401
    assert cache._entries == {}
    for name in ("A", "B", "C"):
        tenant_id, token = make_tenant(engine, name)
        assert ScimClient(client, token, tenant_id).get("/Users").status_code == 200
    assert 1 <= len(cache._entries) <= 2


def test_writes_reuse_the_tenant_snapshot_only_while_its_row_is_unchanged(
        engine: Engine) -> None:
    tenant_id, token = make_tenant(engine)
    with make_sessionmaker(engine, writes=True)() as s:
        first = tenants.authenticate(s, token)
    with make_sessionmaker(engine, writes=True)() as s:
        again = tenants.authenticate(s, token)
    assert first is not None and again is first  # the same row: the same snapshot
    with make_sessionmaker(engine, writes=True)() as s:
        s.execute(update(Tenant).where(Tenant.id == tenant_id)
                  .values(provisioning_paused=True))
        s.commit()
    with make_sessionmaker(engine, writes=True)() as s:
        changed = tenants.authenticate(s, token)
    assert changed is not None and changed is not first
    assert changed.provisioning_paused and not first.provisioning_paused


def test_a_read_the_cache_answers_opens_no_session(settings: Settings, engine: Engine) -> None:
    """A GET by id whose token the cache knows runs one statement on a bare connection:
    no ORM session transaction to begin and roll back (a sixth of the GET's calls)."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from tests.support.statements import counting

    app, _clock = app_with(settings, engine, seconds=10)
    tenant_id, token = make_tenant(engine)
    scim = ScimClient(app.test_client(), token, tenant_id)
    uid = scim.post("/Users", user()).json["id"]
    assert scim.get(f"/Users/{uid}").status_code == 200  # now cached
    begun: list[object] = []

    def began(session: Session, *_args: object) -> None:
        begun.append(session)

    event.listen(Session, "after_begin", began)
    try:
        with counting(engine) as issued:
            response = scim.get(f"/Users/{uid}")
    finally:
        event.remove(Session, "after_begin", began)
    assert response.status_code == 200 and response.json["id"] == uid
    assert begun == []
    assert len([s for s in issued if s.lstrip().upper().startswith("SELECT")]) == 1, issued
