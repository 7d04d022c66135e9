"""The kind of model is a place in the code: outside a task type's own package, no module names its
concepts. A forecaster's words (its baselines, the residual input, its fixed error metrics, the
word itself) appear only in ``tasktypes/forecast/``; every other module asks the seam. Read from
the tokens, so a word in a comment or a docstring counts as much as one in code."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

from support import REPO

TASK_TYPES = REPO / "plugins" / "cityfactory" / "tasktypes"
# The words each kind owns (case-insensitive, whole words or identifier parts).
OWN_WORDS = {
    "forecast": ["persistence", "linear_autoregression", "linear autoregression", "autoregression", "residual_of",
                 "mae", "rmse", "mape", "smape", "forecast", "forecaster", "forecasts", "forecasting"],
    "image_classification": ["macro_f1", "macro-F1", "confusion", "cnn", "hog", "augmentation", "classifier",
                             "classifiers", "majority"],
}


def _code() -> list[Path]:
    return [*sorted((REPO / "plugins").rglob("*.py")), *sorted((REPO / "dags").glob("*.py"))]


def _words_of(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every name, string and comment in the file."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    kinds = {tokenize.NAME, tokenize.STRING, tokenize.COMMENT}
    return [(t.start[0], t.string) for t in tokens if t.type in kinds]


def _pattern(words: list[str]) -> re.Pattern:
    # a word in any case on its own, or as a part of an identifier (test_mae, max_mae_ratio,
    # ForecastSpec): not inside a longer lower-case word (maestro)
    return re.compile(r"(?<![A-Za-z])((?i:" + "|".join(re.escape(w) for w in words) + r"))(?![a-z])")


def test_every_kind_with_words_has_a_package():
    assert {p.name for p in TASK_TYPES.iterdir() if p.is_dir() and (p / "__init__.py").exists()} >= set(OWN_WORDS)


def test_no_module_outside_a_kinds_package_names_its_concepts():
    found = []
    for kind, words in OWN_WORDS.items():
        pattern, home = _pattern(words), TASK_TYPES / kind
        for path in _code():
            if path.is_relative_to(home):
                continue
            found += [f"{path.relative_to(REPO)}:{line}: {m.group(1)!r} ({kind})"
                      for line, text in _words_of(path) for m in pattern.finditer(text)]
    assert not found, "a kind's words outside its package:\n" + "\n".join(found)


def test_the_check_sees_a_word_where_it_would_be_written():
    """The pattern catches the ways a forecasting word slips in: a metric key, an identifier part,
    a class name, a docstring."""
    pattern = _pattern(OWN_WORDS["forecast"])
    for text in ('"rmse"', "reference_mae", "max_mae_ratio", "ForecastSpec", '"""the persistence baseline"""',
                 "spec.architecture.residual_of", "# beats linear autoregression"):
        assert pattern.search(text), text
    for text in ("maestro", "primary", "normalise", "gate_metric", "formats"):
        assert not pattern.search(text), text
