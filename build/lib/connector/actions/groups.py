"""A tenant's groups: the modules a group gives its members."""

from __future__ import annotations

from collections.abc import Sequence

from connector.actions import AdminCall
from connector.actions.users import module_names
from connector.errors import NotFound
from connector.models import Group


def set_group_modules(call: AdminCall, tenant_id: str, group_id: str, modules: Sequence[str]
                      ) -> tuple[Group, bool]:
    """Replace the modules a group gives its members. Returns the group and whether
    anything changed."""
    tenant = call.tenant(tenant_id)
    names = module_names(modules)
    group = call.session.get(Group, (tenant_id, group_id), with_for_update=True)
    if group is None:
        raise NotFound(f"Group {group_id} not found in this tenant.")
    changed = call.directory(tenant).set_group_modules(group, names)
    if changed:
        call.audit("group.modules", tenant_id, group_id, {"modules": names})
    call.session.flush()
    return group, changed
