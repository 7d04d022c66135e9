"""Loopback ports for a new fleet: taken by no fleet of the project, and free on this machine now."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from urllib.parse import urlsplit

import yaml

FIRST_PORT = 9400


def ports_in_use(fleets_dir: Path) -> set[int]:
    """Every port a fleet file of the project names (broken files count for what they hold)."""
    used = set()
    for path in fleets_dir.glob("*.yaml"):
        with contextlib.suppress(yaml.YAMLError, OSError):
            for node in (yaml.safe_load(path.read_text()) or {}).get("nodes", []) or []:
                with contextlib.suppress(AttributeError, ValueError, TypeError):
                    if port := urlsplit(node["url"]).port:
                        used.add(port)
    return used


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, fleets_dir: Path) -> list[int]:
    """``count`` ports from ``FIRST_PORT`` up that no fleet names and nothing listens on."""
    used, found, port = ports_in_use(fleets_dir), [], FIRST_PORT
    while len(found) < count:
        if port not in used and _free(port):
            found.append(port)
        port += 1
    return found
