"""Write a tenant's history at chosen instants through the real directory service.

Billing tests build histories the way production does (SCIM-side writes, admin actions,
group changes through `connector.directory`), only with the clock set by the test, so
every event gets the effective and recorded time the scenario needs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from billing.profiles import update_profile
from connector import events, tenants
from connector.commands import GroupFields, MemberChange, UserFields
from connector.db import make_sessionmaker
from connector.directory import Directory
from connector.events import WriteContext
from connector.models import Activity, Group, Tenant, User
from connector.status import Source


def at(text: str) -> dt.datetime:
    """An instant from ISO text; naive text is UTC."""
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class History:
    def __init__(self, engine: Engine, created: str = "2026-01-01T00:00:00",
                 name: str = "Acme", time_zone: str = "UTC", tenant_id: str | None = None):
        self.maker = make_sessionmaker(engine, writes=True)
        if tenant_id is not None:  # an existing tenant (e.g. a live server's)
            self.tenant_id = tenant_id
            return
        with self.maker() as s:
            tenant, _ = tenants.create_tenant(s, name, at(created))
            tenant.time_zone = time_zone
            s.commit()
            self.tenant_id = tenant.id

    @contextmanager
    def directory(self, when: str, source: Source = Source.SCIM) -> Iterator[Directory]:
        with self.maker() as s:
            tenant = s.get(Tenant, self.tenant_id)
            assert tenant is not None
            ctx = WriteContext(self.tenant_id, source, f"{source}-test", "test", at(when))
            yield Directory(s, tenant, ctx)
            s.commit()

    def billing(self, when: str = "2026-01-01T00:00:00", **changes: Any) -> None:
        with self.maker() as s:
            tenant = s.get(Tenant, self.tenant_id)
            assert tenant is not None
            ctx = WriteContext(self.tenant_id, Source.ADMIN, "admin@test", "test", at(when))
            update_profile(s, ctx, tenant, changes)
            s.commit()

    def create(self, when: str, name: str, active: bool = True, guest: bool = False,
               external_guest: bool = False, modules: tuple[str, ...] | None = None,
               frontline: dict[str, Any] | None = None) -> str:
        with self.directory(when) as d:
            return d.create_user(UserFields(
                user_name=name, active=active, guest=guest,
                external_company_guest=external_guest, modules=modules,
                frontline=frontline)).id

    def _user(self, s: Session, user_id: str) -> User:
        user = s.get(User, (self.tenant_id, user_id))
        assert user is not None
        return user

    def set_active(self, when: str, user_id: str, active: bool) -> None:
        with self.directory(when) as d:
            user = self._user(d.session, user_id)
            d.update_user(user, UserFields(user_name=user.user_name, active=active,
                                           guest=user.guest, admin=user.admin,
                                           external_company_guest=user.external_company_guest,
                                           frontline=user.frontline))

    def update(self, when: str, user_id: str, **changes: Any) -> None:
        with self.directory(when) as d:
            user = self._user(d.session, user_id)
            values = {"user_name": user.user_name, "guest": user.guest, "admin": user.admin,
                      "external_company_guest": user.external_company_guest,
                      "frontline": user.frontline, **changes}
            d.update_user(user, UserFields(**values))

    def remove(self, when: str, user_id: str) -> None:
        with self.directory(when) as d:
            d.remove_user(self._user(d.session, user_id))

    def restore(self, when: str, user_id: str) -> None:
        with self.directory(when, Source.ADMIN) as d:
            d.restore_user(self._user(d.session, user_id), fed_by_entra_sync=False)

    def modules(self, when: str, user_id: str, *modules: str) -> None:
        with self.directory(when, Source.ADMIN) as d:
            d.set_user_modules(self._user(d.session, user_id), modules)

    def invite(self, when: str, user_id: str, claim: bool = False) -> None:
        with self.directory(when, Source.ADMIN) as d:
            user = self._user(d.session, user_id)
            d.claim_user(user) if claim else d.invite_user(user)

    def group(self, when: str, name: str, modules: tuple[str, ...] = (),
              members: tuple[str, ...] = ()) -> str:
        with self.directory(when) as d:
            return d.create_group(GroupFields(display_name=name, modules=modules), members).id

    def members(self, when: str, group_id: str, action: str, *user_ids: str) -> None:
        with self.directory(when) as d:
            group = d.session.get(Group, (self.tenant_id, group_id))
            assert group is not None
            d.update_group(group, GroupFields(display_name=group.display_name,
                                              external_id=group.external_id, data=group.data),
                           [MemberChange(action, user_ids)])

    def activity(self, occurred: str, user_id: str, kind: str = "sign_in",
                 recorded: str | None = None) -> None:
        with self.maker() as s:
            s.add(Activity(tenant_id=self.tenant_id, user_id=user_id, kind=kind,
                           occurred_at=at(occurred), recorded_at=at(recorded or occurred)))
            s.commit()

    def late_event(self, effective: str, recorded: str, user_id: str, kind: str,
                   old: Any, new: Any) -> None:
        """An event whose source dated it before the connector learned it (an admin's
        back-dated correction): what makes a closed month's adjustment."""
        with self.maker() as s:
            ctx = WriteContext(self.tenant_id, Source.ADMIN, "admin@test", "test", at(recorded))
            events.record(s, ctx, "user", user_id, kind, old, new, effective_at=at(effective))
            s.commit()

    def user_ids(self) -> list[str]:
        with self.maker() as s:
            return list(s.scalars(select(User.id).where(User.tenant_id == self.tenant_id)))
