"""The package layering DESIGN.md fixes, checked from the source's own imports.

A rule broken here is a structure quietly eroding: a package reaching into another
surface's routes, a pure core importing a framework, or an admin action whose audit line
is written somewhere other than its one home.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("connector", "scim", "azure_sync", "billing")
PURE_CORES = ("connector/status.py", "billing/fold.py", "billing/policies.py",
              "billing/invoice.py", "billing/calendar.py", "azure_sync/mapping.py",
              "scim/filters.py", "scim/patch.py")


def modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
                  if "migrations" not in p.parts)


def imported(path: Path) -> set[str]:
    """Every module name the file imports (`from a.b import c` gives a.b and a.b.c)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def package_of(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


def test_the_feature_packages_never_import_each_other() -> None:
    broken = []
    for path in modules():
        own = package_of(path)
        if own == "connector":
            continue
        for name in imported(path):
            top = name.split(".")[0]
            if top in PACKAGES and top not in (own, "connector"):
                broken.append(f"{path.relative_to(ROOT)} imports {name}")
    assert broken == []


def test_connector_imports_no_feature_package_outside_the_wiring() -> None:
    """Only the app factory and the CLI entry join the packages together."""
    wiring = {"connector/app.py", "connector/cli.py"}
    broken = [f"{path.relative_to(ROOT)} imports {name}" for path in modules()
              if package_of(path) == "connector"
              and str(path.relative_to(ROOT)) not in wiring
              for name in imported(path) if name.split(".")[0] in ("scim", "azure_sync",
                                                                   "billing")]
    assert broken == []


def test_no_surface_imports_another_surfaces_routes() -> None:
    """Admin actions and request plumbing are shared through connector.actions and
    connector.http; a routes module or the web UI's internals are nobody's library."""
    broken = []
    for path in modules():
        relative = str(path.relative_to(ROOT))
        for name in imported(path):
            if name.startswith("connector.api.routes") and not relative.startswith(
                    "connector/api/"):
                broken.append(f"{relative} imports {name}")
            in_web_ui = name == "connector.web" or name.startswith("connector.web.")
            if (in_web_ui and not relative.startswith("connector/web/")
                    and name not in ("connector.web", "connector.web.pages")
                    and not name.startswith("connector.web.pages.")):
                broken.append(f"{relative} imports {name}")
            if (name.startswith("connector.web.") and not relative.startswith("connector/")
                    and not name.startswith("connector.web.pages")):
                broken.append(f"{relative} imports {name}")
    assert broken == []


def test_the_packages_pages_use_only_the_web_uis_public_page_kit() -> None:
    broken = [f"{path.relative_to(ROOT)} imports {name}" for path in modules()
              if package_of(path) in ("azure_sync", "billing")
              for name in imported(path)
              if (name == "connector.web" or name.startswith("connector.web."))
              and not name.startswith("connector.web.pages")]
    assert broken == []


@pytest.mark.parametrize("relative", PURE_CORES)
def test_a_pure_core_imports_no_framework(relative: str) -> None:
    frameworks = ("flask", "sqlalchemy", "requests", "msal", "werkzeug", "psycopg")
    names = imported(ROOT / relative)
    assert sorted(n for n in names if n.split(".")[0] in frameworks) == []


def test_admin_audit_lines_are_written_by_admin_calls() -> None:
    """An admin action's audit line comes from AdminCall.audit; only sign-in/out and the
    operator's CLI write theirs directly."""
    allowed = {"connector/actions/__init__.py", "connector/auth.py", "connector/cli.py",
               "connector/admins.py", "connector/models/admins.py"}  # the last two: the table
    writers = sorted(str(path.relative_to(ROOT)) for path in modules()
                     if "admins.audit(" in path.read_text()
                     or "AuditEntry(" in path.read_text())
    assert set(writers) <= allowed, writers


def test_tenant_policy_columns_have_one_writer() -> None:
    """`connector.tenant_settings` is the only code that sets a tenant's policy."""
    columns = ("status_source", "scim_default_status", "provisioning_paused", "entra_sync",
               "time_zone")
    broken = []
    for path in modules():
        relative = str(path.relative_to(ROOT))
        if relative in ("connector/tenant_settings.py", "connector/tenants.py",
                        "connector/models/tenants.py"):
            continue  # the owner; creation of a tenant with its defaults; the schema
        for node in ast.walk(ast.parse(path.read_text(), relative)):
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign)
                       else [])
            broken += [f"{relative}:{node.lineno} sets .{t.attr}" for t in targets
                       if isinstance(t, ast.Attribute) and t.attr in columns]
    assert broken == []
