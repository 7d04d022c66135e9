"""The roles of the city's departments, as FAB permissions.

Airflow's FAB auth manager checks a DAG's parts (runs, task instances, logs, approvals, XComs, code)
twice: the role must hold the action on the part (e.g. "DAG Runs") and on the DAG itself
("DAG:<dag_id>": read for a GET, edit for anything else). So a department's roles are FAB's own
Viewer (viewers) or User (operators) with every city-wide permission on "DAGs" taken out, plus read
(operators: and edit) on each DAG of the department's scenarios, and read on the plugin list (the
navigation's entries). Another department's DAG, its runs, logs, approvals and reports are then a
403. The city-wide roles stay FAB's own: Admin for the platform team, Viewer for whoever may read
the whole city.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

Permission = tuple[str, str]  # (FAB action, FAB resource)
ADMIN_LOGIN, ADMIN_ROLE = "admin", "Admin"


class Duty(StrEnum):
    """What a department role may do with its own scenarios."""

    OPERATOR = "operator"  # trigger, clear, approve, read everything
    VIEWER = "viewer"  # read everything, change nothing


@dataclass(frozen=True)
class DepartmentRole:
    domain: str
    duty: Duty
    permissions: frozenset[Permission]

    @property
    def name(self) -> str:
        return role_name(self.domain, self.duty)



def role_name(domain: str, duty: Duty) -> str:
    return f"{domain} {duty}s"


def login_name(domain: str, duty: Duty) -> str:
    return f"{domain}-{duty}"


def city_logins(domains: Iterable[str]) -> dict[str, str]:
    """The embedded stack's logins and their roles: the platform admin, and one per department role."""
    return {ADMIN_LOGIN: ADMIN_ROLE, **{login_name(d, duty): role_name(d, duty) for d in domains for duty in Duty}}


def department_roles(domains: Iterable[str], dag_domains: Mapping[str, str]) -> list[DepartmentRole]:
    """An operator and a viewer role for each department; ``dag_domains`` maps each scenario DAG
    to its department."""
    from airflow.providers.fab.auth_manager.security_manager.override import (
        FabAirflowSecurityManagerOverride as fab,
    )
    from airflow.providers.fab.www.security import permissions as fab_permissions

    def citywide(permission: Permission) -> bool:  # on every DAG at once, or naming every DAG
        action, resource = permission
        return resource == fab_permissions.RESOURCE_DAG_DEPENDENCIES or (
            resource == fab_permissions.RESOURCE_DAG and action != fab_permissions.ACTION_CAN_ACCESS_MENU)

    # the UI builds its navigation's plugin entries (the city at a glance) from the plugin list, which
    # FAB keeps for Op: its names and views only, nothing of any scenario
    navigation = [(fab_permissions.ACTION_CAN_READ, fab_permissions.RESOURCE_PLUGIN)]
    base = {Duty.VIEWER: fab.VIEWER_PERMISSIONS + navigation,
            Duty.OPERATOR: fab.VIEWER_PERMISSIONS + fab.USER_PERMISSIONS + navigation}
    on_own_dags = {Duty.VIEWER: (fab_permissions.ACTION_CAN_READ,),
                   Duty.OPERATOR: (fab_permissions.ACTION_CAN_READ, fab_permissions.ACTION_CAN_EDIT)}
    roles = []
    for domain in domains:
        own = [dag_id for dag_id, owner in sorted(dag_domains.items()) if owner == domain]
        for duty in Duty:
            granted = {(action, fab_permissions.resource_name(dag_id, fab_permissions.RESOURCE_DAG))
                       for dag_id in own for action in on_own_dags[duty]}
            roles.append(DepartmentRole(domain, duty, frozenset(p for p in base[duty] if not citywide(p)) | granted))
    return roles
