"""The DAG files' verdict on every scenario (usable, or left out and why), remembered between parses.

The dag-processor parses each DAG file every half minute or so, and two of them need the verdict.
Reading and validating three YAML files per scenario, and importing what validates them, was most
of our parse time (some 150 ms a file for 40 scenarios). The verdict is kept as JSON in the home's
cache under a key: the content of every file it was made from (scenarios, model specs and cards,
fleets, the departments file; reading them is cheap, parsing them is not) and the size and
modification time of the library's own source. Any change makes it afresh, and so does an
unreadable memo or one whose key differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from cityfactory.config.scenarios import Scenario
from cityfactory.settings import get_settings

Verdict = tuple[list[Scenario], dict[str, str]]
LIBRARY = Path(__file__).resolve().parents[1]


def memoised_verdict(directory: Path, make: Callable[[], Verdict]) -> Verdict:
    """``make()``'s verdict on the scenarios in ``directory``, from the memo when nothing it was
    made from changed since."""
    settings = get_settings()
    folders, domains_file = (directory, settings.models_dir, settings.fleets_dir), settings.domains_file
    key = _key(folders, domains_file)
    configuration = hashlib.sha256(str((*folders, domains_file)).encode()).hexdigest()[:16]  # a memo each
    memo = settings.cache_dir / "parse" / f"{configuration}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # pydantic's errors are ValueErrors
        kept = json.loads(memo.read_bytes())
        if kept["key"] == key:
            return [Scenario.model_validate(s) for s in kept["usable"]], dict(kept["broken"])
    usable, broken = make()
    _write(memo, {"key": key, "usable": [s.model_dump(mode="json", by_alias=True) for s in usable], "broken": broken})
    return usable, broken


def _key(folders: tuple[Path, ...], domains_file: Path) -> str:
    digest = hashlib.sha256()
    inputs = sorted(p for folder in folders if folder.is_dir() for p in folder.rglob("*") if p.is_file())
    for path in [*inputs, domains_file]:
        try:
            digest.update(f"{path}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
        except OSError:
            digest.update(f"{path}\0unreadable\n".encode())
    for path in sorted(LIBRARY.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _write(memo: Path, content: dict) -> None:
    """Atomically (parses run side by side); a home that cannot be written only costs the memo."""
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=memo.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(json.dumps(content).encode())
            os.replace(temporary, memo)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
