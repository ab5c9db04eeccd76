# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Rounds of ``x <- A x + b`` over a sparse matrix in one compiled loop (`core.rig.texture_fit`'s
diffusion of the skin colour into never-seen skin: hundreds of rounds of one-ring means).

Each round is what ``A @ x + b`` computes with a SciPy CSR matrix, to the bit: per row, the row's
entries in stored order multiply-added onto zero in the values' type (float32), then ``b`` added.
Here the rounds run without Python between them and without allocating, the rows of a round shared
by ``threads`` OpenMP threads (each row's arithmetic is the same on any thread: the result does not
depend on the count).
"""
from cython.parallel cimport prange
from libc.string cimport memcpy

import numpy as np


def iterate(const int[::1] indptr, const int[::1] indices, const float[::1] data, const float[:, ::1] b,
            float[:, ::1] x, int rounds, int threads=1):
    """``rounds`` times ``x <- A x + b`` in place, A the (R, R) CSR matrix (indptr, indices, data).

    Shapes: indptr (R + 1,), indices and data (nnz,), b and x (R, C).
    """
    cdef Py_ssize_t rows = x.shape[0], cols = x.shape[1], i, jj, k, r
    cdef float s
    if indptr.shape[0] != rows + 1 or b.shape[0] != rows or b.shape[1] != cols \
            or indices.shape[0] != data.shape[0] or (rows > 0 and indptr[rows] > data.shape[0]):
        raise ValueError("iterate: inconsistent shapes")
    if rows == 0 or cols == 0 or rounds <= 0:
        return
    other_a = np.empty((rows, cols), np.float32)
    cdef float[:, ::1] other = other_a
    cdef float* src = &x[0, 0]
    cdef float* dst = &other[0, 0]
    cdef float* swap
    cdef const float* add = &b[0, 0]
    threads = max(1, threads)
    with nogil:
        for r in range(rounds):
            for i in prange(rows, schedule="static", num_threads=threads):
                for k in range(cols):
                    s = 0.0
                    for jj in range(indptr[i], indptr[i + 1]):
                        s = s + data[jj] * src[indices[jj] * cols + k]
                    dst[i * cols + k] = s + add[i * cols + k]
            swap = src
            src = dst
            dst = swap
        if src != &x[0, 0]:
            memcpy(&x[0, 0], src, rows * cols * sizeof(float))
