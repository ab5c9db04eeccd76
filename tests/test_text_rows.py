"""Rows of numbers as text (`utils.io.text`): the compiled helper writes Python's characters."""
from __future__ import annotations

import numpy as np
import pytest

import utils.io.text as text_module
from utils.io.text import format_rows, kernel_built

COMPILED = [pytest.param(True, marks=pytest.mark.skipif(not kernel_built(), reason="utils.io._text is not built "
                                                        "(pip install -e . or python setup.py build_ext --inplace)")),
            False]


def _values() -> np.ndarray:
    g = np.random.default_rng(0)
    spread = g.normal(size=(3000, 3)) * 10.0 ** g.uniform(-12, 12, size=(3000, 1))
    edges = np.array([[0.0, -0.0, 1e-300], [5e-324, 1e308, -1e308], [0.5, 1.5, 2.5], [123456789.0, 1e-5, 1e16],
                      [0.125, -0.375, 99999999.5]])
    # The compiled short road's hard cases: just below and above powers of ten (where the exponent
    # and a rounding up to the next power meet), exact binary fractions (ties at some precisions),
    # float32 coordinates as the meshes hold them, negative values that round to zero.
    powers = 10.0 ** np.arange(-22, 23)
    ties = np.array([4.9999e-9, 5e-9, 5.0001e-9, 4.9999e-8, 5e-8])
    offsets = np.concatenate([-np.arange(1, 80) * 1e-10, -ties, np.arange(0, 6) * 1e-9])
    near_powers = (powers[:, None] * (1.0 + offsets[None, :])).ravel()
    binary = np.round(g.normal(size=3000) * 1e6) / 2.0 ** g.integers(0, 34, 3000)
    mesh = (g.normal(size=3000) * 80.0).astype(np.float32).astype(np.float64)
    tiny = -g.uniform(0, 1e-8, 300)
    hard = np.concatenate([near_powers, -near_powers, binary, mesh, tiny])
    return np.concatenate([spread, edges, hard[:len(hard) // 3 * 3].reshape(-1, 3)])


@pytest.mark.parametrize("compiled", COMPILED)
@pytest.mark.parametrize("row", ["v %.8g %.8g %.8g\n", "v %.8f %.8f %.8f\n", "%e|%.3E|%g\n",
                                 "x %.17g %10.4f %%%.2f\n", "%.1g %.2g %.9g\n", "%.0f|%.3f|%.9f\n",
                                 "vt %.6g %.5f %.7g\n"])
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


@pytest.mark.skipif(not kernel_built(), reason="utils.io._text is not built")
def test_the_short_road_is_taken_for_the_mesh_writers_conversions_and_agrees_with_snprintf():
    _text, _short_road = text_module._KERNEL, text_module._short_road
    assert _short_road("v %.8g %.8g %.8g\n") == ([b"v ", b" ", b" ", b"\n"], [(b"g", 8)] * 3)
    assert _short_road("v %.8f %.8f\n") is not None
    for other in ("%e %g\n", "%.17g\n", "%10.4f\n", "%%%.2f\n", "%.0g\n", "%+.8f\n"):
        assert _short_road(other) is None
    values = _values()
    for row in ("v %.8g %.8g %.8g\n", "v %.8f %.3f %.9g\n"):
        pieces = _short_road(row)
        reference = _text.format_rows(values, row.encode(), pieces, fast=False)
        assert _text.format_rows(values, row.encode(), pieces) == reference
    with pytest.raises(ValueError, match="short road"):
        _text.format_rows(values, b"%.8g %.8g %.8g\n", ([b"", b" ", b" ", b"\n"], [(b"g", 12)] * 3))


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
