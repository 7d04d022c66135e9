"""Configuration files read as YAML and validated by a pydantic model, with errors a person can act
on: the file, the line, the key, and for the usual YAML slips a hint of the fix.

YAML itself is read once into Python values and once into its node tree (which keeps each key's
line), so a validation error's ``loc`` can be traced back to a line in the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

T = TypeVar("T")

# A key the model does not know whose value is empty: almost always a comma (or ": ") in unquoted
# text, which YAML's {...} reads as the start of another key.
UNQUOTED_TEXT_HINT = ("if it is part of a text value, put that value in quotes (in {...} an unquoted "
                      "comma starts a new key)")


class ScenarioError(ValueError):
    """A scenario's file (scenario, model spec, fleet) that cannot be read or does not validate, or
    files that do not fit together; the message names the file, line and key."""


def _file_keys(loc: tuple) -> tuple:
    """pydantic's error location in the file's own key names (``schema_`` is the file's ``schema``)."""
    return tuple("schema" if p == "schema_" else p for p in loc)


def _key_path(loc: tuple) -> str:
    return ".".join(str(p) for p in _file_keys(loc))


def _key_lines(node: yaml.Node | None, path: tuple = (), lines: dict[tuple, int] | None = None) -> dict[tuple, int]:
    """Every key path in the document -> its 1-based line (list items by index)."""
    lines = {} if lines is None else lines
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            here = (*path, key.value)
            lines[here] = key.start_mark.line + 1
            _key_lines(value, here, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _key_lines(item, (*path, index), lines)
    return lines


def line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    """The line of the deepest key of ``loc`` the file has (pydantic adds names the file lacks)."""
    parts = _file_keys(loc)
    for end in range(len(parts), 0, -1):
        if parts[:end] in lines:
            return lines[parts[:end]]
    return None


# libyaml where PyYAML was built with it: the DAG file reads three YAML files per scenario at every parse
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> tuple[Any, str]:
    """The file's content and its text (whose key lines an error looks up); a YAML error names the
    file and line."""
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.load(text, Loader=LOADER), text
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p)
        raise ScenarioError(f"{where}: not valid YAML: {problem or exc}") from None


def describe(exc: ValidationError, path: Path, lines: dict[tuple, int]) -> str:
    """One line per error: ``file:line: key 'a.b': message`` (and a hint where one helps)."""
    problems = []
    for error in exc.errors():
        line = line_of(lines, error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = f"{error['loc'][-1]!r} is not a key here"
            if error.get("input") is None:
                message += f"; {UNQUOTED_TEXT_HINT}"
        key = f"key '{_key_path(error['loc'])}': " if error["loc"] else "the top level: "
        problems.append(f"{path}{f':{line}' if line else ''}: {key}{message}")
    return "; ".join(problems)


def load_validated(path: Path, validate: Callable[[Any], T]) -> T:
    """``validate`` (a model's ``model_validate`` or a function calling one) applied to the file's
    content; every error comes back as one :class:`ScenarioError` naming the file (and for a
    validation error the line and key)."""
    raw, text = read_yaml(path)
    try:
        return validate(raw)
    except ValidationError as exc:
        raise ScenarioError(describe(exc, path, _key_lines(yaml.compose(text, Loader=LOADER)))) from None
    except ValueError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
