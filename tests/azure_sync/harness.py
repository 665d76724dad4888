"""The harness of the round tests: a tenant registered for Entra sync against the fakes
(real HTTPS on loopback) on the test database, and helpers to look at the result."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from azure_sync import rounds, secrets
from azure_sync.service import SyncService, register
from connector.config import AzureSyncSettings, Settings
from connector.db import make_sessionmaker
from connector.events import WriteContext
from connector.models import EntraRegistration, Tenant, User
from connector.status import Source
from tests.conftest import make_tenant
from tests.fakes.fixtures import FakeApp
from tests.fakes.graph import FakeGraph


@dataclass
class Sync:
    engine: Engine
    tenant_id: str
    service: SyncService
    graph: FakeGraph
    app: FakeApp
    sleeps: list[float]

    @property
    def entra(self) -> Any:
        return self.graph.directory(self.app.tenant_id)

    def run(self, **options: Any) -> rounds.RoundResult:
        return self.service.run(self.tenant_id, "manual", rounds.RoundOptions(**options),
                                sleep=self.sleeps.append)

    def session(self) -> Session:
        return make_sessionmaker(self.engine)()

    def users(self) -> dict[str, User]:
        """Live users by Graph object id."""
        with self.session() as s:
            return {u.external_id: u for u in s.scalars(select(User).where(
                User.tenant_id == self.tenant_id, User.removed_at.is_(None)))}

    def register(self, **changes: Any) -> EntraRegistration:
        """Change the registration as an admin would (scope_groups=[...], …)."""
        with self.session() as s:
            registration = register(
                s, self.service.settings, WriteContext(self.tenant_id, Source.ADMIN, "test",
                                                       "test", dt.datetime.now(dt.UTC)),
                directory_id=self.app.tenant_id, client_id=self.app.client_id, **changes)
            s.commit()
            s.expunge(registration)
            return registration

    def clone_tenant(self, name: str) -> Sync:
        """Another connector tenant synced from the same Entra tenant and app."""
        tenant_id, _ = make_tenant(self.engine, name)
        with self.session() as s:
            register(s, self.service.settings, WriteContext(
                tenant_id, Source.ADMIN, "test", "test", dt.datetime.now(dt.UTC)),
                directory_id=self.app.tenant_id, client_id=self.app.client_id,
                secret=self.app.client_secret, authority_host=self.app.authority_host,
                graph_base_url=self.app.graph_base_url)
            s.commit()
        return Sync(self.engine, tenant_id, self.service, self.graph, self.app, [])

    def registration(self) -> EntraRegistration:
        with self.session() as s:
            registration = s.get(EntraRegistration, self.tenant_id)
            assert registration is not None
            s.expunge(registration)
            return registration

    def service_now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def set(self, **settings: Any) -> None:
        with self.session() as s:
            tenant = s.get(Tenant, self.tenant_id)
            assert tenant is not None
            for key, value in settings.items():
                setattr(tenant, key, value)
            s.commit()


@pytest.fixture
def sync(engine: Engine, fake_graph: FakeGraph, fake_app: FakeApp, fake_tls: Any,
         fake_entra: Any, tmp_path: Path) -> Sync:
    settings = AzureSyncSettings(encryption_key=secrets.new_key(), retry_budget=20,
                                 allow_private_hosts=True,
                                 graph_scope="https://graph.microsoft.com/.default")
    tenant_id, _ = make_tenant(engine, "Synced")
    maker = make_sessionmaker(engine)
    with maker() as s:
        register(s, settings, WriteContext(tenant_id, Source.ADMIN, "test", "test",
                                           dt.datetime.now(dt.UTC)),
                 directory_id=fake_app.tenant_id, client_id=fake_app.client_id,
                 secret=fake_app.client_secret, authority_host=fake_app.authority_host,
                 graph_base_url=fake_app.graph_base_url)
        s.commit()
    service = SyncService(settings, maker, make_sessionmaker(engine, writes=True),
                          verify=str(fake_tls.ca_path))
    return Sync(engine, tenant_id, service, fake_graph, fake_app, [])


@contextmanager
def request_taker(settings: Settings, engine: Engine, paused: bool = False) -> Iterator[Any]:
    """The part of a `connector worker` that takes "Run now" requests, in this process
    (the scheduler's own job, without the tenants' scheduled rounds, so a test sees only
    the rounds it asks for); a process of its own would sync the same way. `paused`:
    it takes nothing (and does not beat) until `resume()`d."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from azure_sync import scheduler

    service = SyncService(settings.azure_sync, make_sessionmaker(engine),
                          make_sessionmaker(engine, writes=True))
    jobs = BackgroundScheduler(timezone=dt.UTC)
    scheduler.add_request_job(jobs, service)
    jobs.start(paused=paused)
    if not paused:  # started once it has said it is alive, as a worker the web process sees
        deadline = time.monotonic() + 30
        while jobs.connector_heart.last is None and time.monotonic() < deadline:
            time.sleep(0.01)
    try:
        yield jobs
    finally:
        scheduler.stop(jobs)


@pytest.fixture
def entra_worker(settings: Settings, engine: Engine) -> Iterator[Any]:
    """A worker taking the "Run now" requests of an app built from `settings`."""
    with request_taker(settings, engine) as jobs:
        yield jobs
