"""Rows of numbers as text (the OBJ writers' ``v`` lines), formatted without holding the
interpreter lock where the compiled helper is built.

The writers run on worker threads beside the fits and renders (`utils.background`). Python's
``(row * n) % tuple(values)`` holds the interpreter lock for the whole string, and every torch call
of the main thread then waits for it to end: beside a thread formatting 26,000-vertex meshes, the
whole head took 11 s instead of 0.3 s. ``utils.io._text`` formats with C's ``snprintf`` (the same
characters for finite numbers: both round correctly) with the lock released; without it, or for
non-finite values, Python formats a few hundred rows at a time so that the lock changes hands.

Example:
    >>> format_rows(np.array([[1.0, 0.5, -2.0]]), "v %.8g %.8g %.8g\\n")
    'v 1 0.5 -2\\n'
"""
from __future__ import annotations

import re
from typing import Optional

import numpy as np

__all__ = ["format_rows", "kernel_built"]

_CONVERSION = re.compile(r"%[-+ 0#]*\d*(?:\.\d+)?[fFeEgGd]")
_SIMPLE = re.compile(r"%\.([0-9])([fg])")
_CHUNK = 256  # rows per Python formatting step (about a millisecond with the lock held)


try:  # built by setup.py (`make setup`); else Python formats
    from utils.io import _text as _KERNEL
except ImportError:
    _KERNEL = None


def kernel_built() -> bool:
    """Whether ``utils.io._text`` is built (``make setup`` / ``pip install -e .`` build it)."""
    return _KERNEL is not None


def _short_road(row: str) -> Optional[tuple]:
    """``row`` split for the compiled helper's short road (``utils.io._text``: ``%.Pf`` and ``%.Pg``
    with P up to 9, no flags or width, the mesh writers' conversions): its literal texts and
    (kind, precision) pairs; None where another conversion or a ``%%`` is in it."""
    if "%%" in row:
        return None
    conversions = _CONVERSION.findall(row)
    simple = [_SIMPLE.fullmatch(c) for c in conversions]
    if not all(simple) or any(m.group(2) == "g" and int(m.group(1)) == 0 for m in simple):
        return None
    texts = [t.encode("ascii") for t in _CONVERSION.split(row)]
    return texts, [(m.group(2).encode("ascii"), int(m.group(1))) for m in simple]


def format_rows(values: np.ndarray, row: str, compiled: Optional[bool] = None) -> str:
    """``(row * len(values)) % tuple(values.ravel())``: each row of ``values`` through ``row``.

    Args:
        values: (N, C) numbers; integers where ``row`` converts with ``%d``.
        row: one row's format with one conversion (``%.8g``, ``%.8f``, ``%d``, ...) per column;
            ``%%`` for a percent sign.
        compiled: use the compiled helper (None: where built, for 1 to 6 float conversions of
            finite values).

    Raises:
        ValueError: ``row`` has another conversion, or not one per column.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"format_rows: values must be (N, C), got shape {values.shape}")
    conversions = _CONVERSION.findall(row.replace("%%", ""))
    if "%" in _CONVERSION.sub("", row.replace("%%", "")) or len(conversions) != values.shape[1]:
        raise ValueError(f"format_rows: {row!r} must hold one conversion per column ({values.shape[1]})")
    floats = not any(c.endswith("d") for c in conversions)
    if floats:
        values = np.ascontiguousarray(values, dtype=np.float64)
    if compiled is None:
        compiled = (_KERNEL is not None and floats and 1 <= values.shape[1] <= 6
                    and bool(np.isfinite(values).all()))
    if compiled:
        if _KERNEL is None or not floats:
            raise RuntimeError("format_rows: the compiled helper formats floats only, and only where "
                               "utils.io._text is built (run `make setup`)")
        return _KERNEL.format_rows(values, row.encode("ascii"), _short_road(row)).decode("ascii")
    return "".join((row * len(part)) % tuple(part.ravel().tolist())
                   for part in (values[s:s + _CHUNK] for s in range(0, len(values), _CHUNK)))
