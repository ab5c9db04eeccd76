"""Rows of numbers as text (`utils.io.text`): the compiled helper writes Python's characters."""
from __future__ import annotations

import numpy as np
import pytest

from utils.io.text import format_rows, kernel_built

COMPILED = [pytest.param(True, marks=pytest.mark.skipif(not kernel_built(), reason="utils.io._text is not built "
                                                        "(pip install -e . or python setup.py build_ext --inplace)")),
            False]


def _values() -> np.ndarray:
    g = np.random.default_rng(0)
    spread = g.normal(size=(3000, 3)) * 10.0 ** g.uniform(-12, 12, size=(3000, 1))
    edges = np.array([[0.0, -0.0, 1e-300], [5e-324, 1e308, -1e308], [0.5, 1.5, 2.5], [123456789.0, 1e-5, 1e16],
                      [0.125, -0.375, 99999999.5]])
    return np.concatenate([spread, edges])


@pytest.mark.parametrize("compiled", COMPILED)
@pytest.mark.parametrize("row", ["v %.8g %.8g %.8g\n", "v %.8f %.8f %.8f\n", "%e|%.3E|%g\n", "x %.17g %10.4f %%%.2f\n"])
def test_rows_are_pythons_formatting(compiled, row):
    values = _values()
    assert format_rows(values, row, compiled=compiled) == (row * len(values)) % tuple(values.ravel().tolist())


@pytest.mark.parametrize("compiled", COMPILED)
def test_one_to_six_columns(compiled):
    g = np.random.default_rng(1)
    for cols in range(1, 7):
        values = g.normal(size=(50, cols))
        row = "v" + " %.8f" * cols + "\n"
        assert format_rows(values, row, compiled=compiled) == (row * 50) % tuple(values.ravel().tolist())


def test_integers_and_non_finite_values_are_formatted_by_python():
    faces = np.arange(12).reshape(2, 6)
    assert format_rows(faces, "f %d/%d %d/%d %d/%d\n") == "f 0/1 2/3 4/5\nf 6/7 8/9 10/11\n"
    odd = np.array([[np.inf, -np.nan, 1.0]])
    assert format_rows(odd, "v %.8g %.8g %.8g\n") == "v inf nan 1\n"  # (C would write -nan)
    assert format_rows(np.zeros((0, 3)), "v %g %g %g\n") == ""


def test_formats_that_do_not_fit_the_columns_are_refused():
    values = np.ones((2, 3))
    for row in ("v %g %g\n", "v %g %g %g %g\n", "v %g %s %g\n", "v %g %g %g %\n"):
        with pytest.raises(ValueError, match="one conversion per column"):
            format_rows(values, row)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        format_rows(np.ones(3), "%g\n")
