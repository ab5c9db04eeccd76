# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Rows of numbers as text without holding the interpreter lock (`utils.io.text.format_rows`).

Python's ``(row * n) % tuple(values)`` holds the lock for the whole string: a worker thread writing
an OBJ that way stalls every torch call of the main thread for as long (a 26,000-vertex mesh took
the whole head's 0.3 s to 11 s beside such a thread). C's ``snprintf`` gives the same characters for
finite doubles (both round correctly), and runs here with the lock released.
"""

from libc.stdio cimport snprintf
from libc.stdlib cimport free, malloc

cdef enum:
    _WIDTH = 330  # characters one formatted double can take at most ("%.8f" of 1e308 is 318 long)


def format_rows(const double[:, ::1] values, bytes row):
    """``(row * len(values)) % tuple(values.ravel())`` for a ``row`` with one conversion per column
    (1 to 6 columns), formatted by C.

    Args:
        values: (N, C) float64, finite (the caller checks).
        row: one row's printf format, e.g. ``b"v %.8g %.8g %.8g\\n"``.

    Returns:
        The N rows as bytes.
    """
    cdef Py_ssize_t n = values.shape[0], cols = values.shape[1], i
    if cols < 1 or cols > 6:
        raise ValueError(f"format_rows: 1 to 6 columns, got {cols}")
    cdef const char* fmt = row
    cdef Py_ssize_t per_row = len(row) + cols * _WIDTH
    cdef char* buffer = <char*> malloc(per_row * n + 1)
    if buffer == NULL:
        raise MemoryError()
    cdef Py_ssize_t used = 0
    cdef int written = 0
    try:
        with nogil:
            for i in range(n):
                if cols == 1:
                    written = snprintf(buffer + used, per_row + 1, fmt, values[i, 0])
                elif cols == 2:
                    written = snprintf(buffer + used, per_row + 1, fmt, values[i, 0], values[i, 1])
                elif cols == 3:
                    written = snprintf(buffer + used, per_row + 1, fmt, values[i, 0], values[i, 1], values[i, 2])
                elif cols == 4:
                    written = snprintf(buffer + used, per_row + 1, fmt, values[i, 0], values[i, 1], values[i, 2],
                                       values[i, 3])
                elif cols == 5:
                    written = snprintf(buffer + used, per_row + 1, fmt, values[i, 0], values[i, 1], values[i, 2],
                                       values[i, 3], values[i, 4])
                else:
                    written = snprintf(buffer + used, per_row + 1, fmt, values[i, 0], values[i, 1], values[i, 2],
                                       values[i, 3], values[i, 4], values[i, 5])
                if written < 0 or written > per_row:
                    break
                used += written
        if written < 0 or written > per_row:
            raise ValueError(f"format_rows: row {i} does not fit the format {row!r}")
        return buffer[:used]
    finally:
        free(buffer)
