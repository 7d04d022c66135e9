"""The department roles: each reads (operators: and changes) the DAGs of its own scenarios only,
holds nothing city-wide on DAGs, and a viewer can change nothing."""

from __future__ import annotations

import json
import stat

from cityfactory.access.logins import login_passwords
from cityfactory.access.roles import ADMIN_LOGIN, Duty, city_logins, department_roles

DAGS = {"traffic_flow": "transport", "air_quality": "environment", "noise": "environment"}


def _roles():
    return {(r.domain, r.duty): r.permissions for r in department_roles(["transport", "environment", "governance"], DAGS)}


def test_a_department_holds_its_own_dags_and_no_other():
    roles = _roles()
    environment = roles["environment", Duty.OPERATOR]
    assert {("can_read", "DAG:air_quality"), ("can_edit", "DAG:air_quality"), ("can_edit", "DAG:noise")} <= environment
    assert not {p for p in environment if p[1] == "DAG:traffic_flow"}
    assert {p for p in roles["governance", Duty.OPERATOR] if p[1].startswith("DAG:")} == set()


def test_nothing_city_wide_on_dags():
    for permissions in _roles().values():
        assert not {(a, r) for a, r in permissions if r in ("DAGs", "DAG Dependencies") and a != "menu_access"}


def test_operators_trigger_and_approve_and_viewers_change_nothing():
    roles = _roles()
    operator, viewer = roles["transport", Duty.OPERATOR], roles["transport", Duty.VIEWER]
    assert {("can_create", "DAG Runs"), ("can_edit", "HITL Detail"), ("can_read", "Task Logs")} <= operator
    assert ("can_read", "Task Logs") in viewer and ("can_read", "DAG:traffic_flow") in viewer
    assert ("can_read", "Plugins") in viewer and ("can_read", "Plugins") in operator  # the navigation's city at a glance
    assert not {p for p in viewer if p[0] in ("can_create", "can_edit", "can_delete")
                and p[1] not in ("My Password", "My Profile")}


def test_logins_get_their_own_passwords_once(tmp_path):
    file = tmp_path / "home" / "passwords.json"
    logins = city_logins(["transport", "environment"])
    assert logins == {ADMIN_LOGIN: "Admin", "transport-operator": "transport operators",
                      "transport-viewer": "transport viewers", "environment-operator": "environment operators",
                      "environment-viewer": "environment viewers"}
    first, new = login_passwords(file, logins)
    assert new == list(logins) and len(set(first.values())) == len(logins)
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    again, new = login_passwords(file, [*logins, "noise-operator"])
    assert new == ["noise-operator"] and {k: again[k] for k in logins} == first
    assert json.loads(file.read_text()) == again
