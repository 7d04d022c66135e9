"""The city's roles and logins written into Airflow's FAB tables: run after ``airflow db migrate``
and before the components start (and again after scenarios or departments change).

Roles are made exactly as ``department_roles`` says: a permission a role holds beyond that (a DAG
moved to another department) is taken away. Users get their role and the password of the logins
file, which is the embedded stack's source of truth.
"""

from __future__ import annotations

from pathlib import Path

from cityfactory.access.logins import login_passwords
from cityfactory.access.roles import DepartmentRole, city_logins, department_roles


def city_roles() -> list[DepartmentRole]:
    """The department roles over the scenarios that load now (a broken scenario has no DAG)."""
    from cityfactory.config.domains import load_domains
    from cityfactory.config.scenarios import scan_scenarios
    from cityfactory.settings import get_settings

    scenarios, _ = scan_scenarios(get_settings().scenarios_dir)
    return department_roles(load_domains().domains, {s.dag_id: s.domain for s in scenarios})


def _sync_role(sm, wanted: DepartmentRole) -> None:
    role = sm.add_role(wanted.name)
    held = {(p.action.name, p.resource.name): p for p in role.permissions}
    for action, resource in sorted(wanted.permissions - held.keys()):
        sm.add_permission_to_role(role, sm.create_permission(action, resource))
    for pair in sorted(held.keys() - wanted.permissions):
        sm.remove_permission_from_role(role, held[pair])


def _sync_user(sm, username: str, role_name: str, password: str) -> None:
    role = sm.find_role(role_name)
    user = sm.find_user(username=username)
    if user is None:
        sm.add_user(username, username, "cityfactory", f"{username}@localhost", role, password)
        return
    if [r.name for r in user.roles] != [role_name]:
        user.roles = [role]
        sm.update_user(user)
    sm.reset_password(user.id, password)


def sync_access(passwords_file: Path) -> list[str]:
    """Write the roles and users; returns the logins whose passwords were generated now."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import (
        get_application_builder,
    )

    roles = city_roles()
    accounts = city_logins(dict.fromkeys(r.domain for r in roles))
    passwords, new = login_passwords(passwords_file, accounts)
    with get_application_builder() as appbuilder:
        for role in roles:
            _sync_role(appbuilder.sm, role)
        for username, role_name in accounts.items():
            _sync_user(appbuilder.sm, username, role_name, passwords[username])
    return new
