"""Every docstring example of the packages runs, and prints what it says it prints.

Examples that load the ICT-FaceKit model (they name ``external/ICT-FaceKit``) run from the
repository root and are skipped, with the reason, where the model is not prepared.
"""
from __future__ import annotations

import doctest
import importlib
import os
from pathlib import Path

import pytest

from utils.paths import EXTERNAL_DIR, REPO_ROOT

PACKAGES = ("core", "models", "utils")


def _modules() -> list:
    names = []
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join(parts))
    return names


def _with_examples() -> list:
    found = []
    finder = doctest.DocTestFinder(exclude_empty=True)
    for name in _modules():
        module = importlib.import_module(name)
        tests = [t for t in finder.find(module, name) if t.examples and t.name.startswith(name)]
        if tests:
            found.append(name)
    return found


@pytest.mark.parametrize("name", _with_examples())
def test_docstring_examples_run(name, monkeypatch):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(module, name) if t.examples]
    text = "\n".join(example.source for t in tests for example in t.examples)
    if "external/ICT-FaceKit" in text and not (EXTERNAL_DIR / "ICT-FaceKit").is_dir():
        pytest.skip(f"{name}: its examples load the ICT-FaceKit model, not prepared at {EXTERNAL_DIR}")
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("INORIG_OFFLINE", "1")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed (see above)"
    assert result.attempted > 0


def test_no_example_is_skipped():
    """Examples run; none hides behind ``doctest: +SKIP``."""
    skipped = [name for name in _modules()
               if "doctest: +SKIP" in Path(importlib.import_module(name).__file__).read_text()]
    assert skipped == [], f"modules with skipped examples: {skipped}"
    assert os.path.isdir(REPO_ROOT / "core")
