# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""dlib's serialized ``shape_predictor`` (a ``.dat`` file) read into arrays (`utils.landmarks.shape_predictor`).

dlib writes integers as a length byte (the number of value bytes, with 0x80 set for a negative
value) and then the value's bytes, least significant first; a float as two such integers, a
mantissa and a power of two (``dlib::float_details``); a column vector as its sizes negated and then
its values; a ``std::vector`` as its size and then its items. A shape predictor is: version 1,
the initial shape (2L values), the cascade's forests (per level, per tree: its splits (idx1, idx2,
threshold) and its leaf vectors), each level's feature-pixel anchor landmarks and each level's
feature-pixel offsets (x, y). Read in one pass without the interpreter lock.
"""
from libc.math cimport floor, ldexp

import numpy as np

cimport numpy as cnp

cnp.import_array()


cdef class _Reader:
    """A cursor over the file's bytes; every read checks that the bytes are there."""

    cdef const unsigned char[::1] buf
    cdef Py_ssize_t pos, end
    cdef bint bad

    def __cinit__(self, const unsigned char[::1] buf):
        self.buf = buf
        self.pos = 0
        self.end = buf.shape[0]
        self.bad = False

    cdef long long integer(self) noexcept nogil:
        """One integer (0 with ``bad`` set where the bytes run out or the length byte is wrong)."""
        cdef unsigned char head
        cdef int size, i
        cdef unsigned long long value = 0
        if self.pos >= self.end:
            self.bad = True
            return 0
        head = self.buf[self.pos]
        size = head & 0x0F
        if size > 8 or (head & 0x70) != 0 or self.pos + 1 + size > self.end:
            self.bad = True
            return 0
        for i in range(size):
            value |= (<unsigned long long>self.buf[self.pos + 1 + i]) << (8 * i)
        self.pos += 1 + size
        if head & 0x80:
            return -<long long>value
        return <long long>value

    cdef float real(self) noexcept nogil:
        """One float: mantissa x 2^exponent (dlib marks infinities and NaN by exponents >= 32000)."""
        cdef long long mantissa = self.integer()
        cdef long long exponent = self.integer()
        if exponent >= 32000 or exponent < -32768:
            self.bad = True
            return 0.0
        return <float>ldexp(<double>mantissa, <int>exponent)


cdef int _column(_Reader r, float* out, Py_ssize_t size) noexcept nogil:
    """A column vector of ``size`` floats; -1 where its sizes are not (-size, -1)."""
    cdef Py_ssize_t i
    if r.integer() != -size or r.integer() != -1:
        return -1
    for i in range(size):
        out[i] = r.real()
    return 0


def read_shape_predictor(const unsigned char[::1] data):
    """The arrays of a serialized dlib shape predictor (``data``: the file's bytes).

    Returns a dict: ``initial`` (2L,) float32, ``splits`` (C, T, S, 2) int32 feature indices,
    ``thresholds`` (C, T, S) float32, ``leaves`` (C, T, S + 1, 2L) float32, ``anchors`` (C, F) int32
    landmark indices, ``deltas`` (C, F, 2) float32; C cascade levels of T trees of S splits (every
    tree complete and of the same depth, as dlib trains them), F feature pixels per level.

    Raises:
        ValueError: the bytes are not a version-1 dlib shape predictor of that layout (the message
            says what was found where).
    """
    cdef _Reader r = _Reader(data)
    cdef long long version = r.integer()
    if r.bad or version != 1:
        raise ValueError(f"not a dlib shape predictor (version {version} at byte 0, expected 1)")
    cdef long long size = -r.integer()
    if r.bad or r.integer() != -1 or size <= 0 or size % 2 or size > 100000:
        raise ValueError("not a dlib shape predictor (no initial shape at byte 2)")
    initial = np.empty(size, np.float32)
    cdef float[::1] initial_v = initial
    cdef Py_ssize_t i
    for i in range(size):
        initial_v[i] = r.real()
    cdef long long levels = r.integer()
    cdef Py_ssize_t level_pos = r.pos
    cdef long long trees = r.integer()
    cdef long long splits_n = r.integer()
    if r.bad or not (0 < levels < 1000 and 0 < trees < 100000 and 0 < splits_n < 65536):
        raise ValueError(f"not a dlib shape predictor (forest sizes {levels}, {trees}, {splits_n} "
                         f"at byte {level_pos})")
    r.pos = level_pos  # read again below, with the rest
    splits = np.empty((levels, trees, splits_n, 2), np.int32)
    thresholds = np.empty((levels, trees, splits_n), np.float32)
    leaves = np.empty((levels, trees, splits_n + 1, size), np.float32)
    cdef int[:, :, :, ::1] splits_v = splits
    cdef float[:, :, ::1] thresholds_v = thresholds
    cdef float[:, :, :, ::1] leaves_v = leaves
    cdef Py_ssize_t c, t, s, k
    cdef long long a, b
    cdef Py_ssize_t where = -1
    with nogil:
        for c in range(levels):
            if r.integer() != trees:
                where = r.pos
                break
            for t in range(trees):
                if r.integer() != splits_n:
                    where = r.pos
                    break
                for s in range(splits_n):
                    a = r.integer()
                    b = r.integer()
                    splits_v[c, t, s, 0] = <int>a
                    splits_v[c, t, s, 1] = <int>b
                    thresholds_v[c, t, s] = r.real()
                if r.integer() != splits_n + 1:
                    where = r.pos
                    break
                for k in range(splits_n + 1):
                    if _column(r, &leaves_v[c, t, k, 0], size) != 0:
                        where = r.pos
                        break
                if where >= 0 or r.bad:
                    break
            if where >= 0 or r.bad:
                break
    if where >= 0 or r.bad:
        raise ValueError(f"dlib shape predictor: its forests are not {levels} levels of {trees} complete "
                         f"trees of {splits_n} splits (at byte {r.pos})")
    if r.integer() != levels:
        raise ValueError(f"dlib shape predictor: expected {levels} anchor lists at byte {r.pos}")
    cdef long long features = r.integer()
    if r.bad or not 0 < features < 1000000:
        raise ValueError(f"dlib shape predictor: bad feature-pixel count at byte {r.pos}")
    anchors = np.empty((levels, features), np.int32)
    deltas = np.empty((levels, features, 2), np.float32)
    cdef int[:, ::1] anchors_v = anchors
    cdef float[:, :, ::1] deltas_v = deltas
    for c in range(levels):
        if c and r.integer() != features:
            raise ValueError(f"dlib shape predictor: level {c} has another feature-pixel count (byte {r.pos})")
        for i in range(features):
            anchors_v[c, i] = <int>r.integer()
    if r.integer() != levels:
        raise ValueError(f"dlib shape predictor: expected {levels} offset lists at byte {r.pos}")
    for c in range(levels):
        if r.integer() != features:
            raise ValueError(f"dlib shape predictor: level {c}'s offsets are not {features} (byte {r.pos})")
        for i in range(features):
            deltas_v[c, i, 0] = r.real()
            deltas_v[c, i, 1] = r.real()
    if r.bad:
        raise ValueError(f"dlib shape predictor: the file ends early ({r.end} bytes)")
    if r.pos != r.end:
        raise ValueError(f"dlib shape predictor: {r.end - r.pos} bytes left over after byte {r.pos}")
    if (splits.size and (splits.min() < 0 or splits.max() >= features)) or \
            (anchors.size and (anchors.min() < 0 or anchors.max() >= size // 2)):
        raise ValueError("dlib shape predictor: a split or anchor index is out of range")
    return {"initial": initial, "splits": splits, "thresholds": thresholds, "leaves": leaves,
            "anchors": anchors, "deltas": deltas}


cdef inline long long _nearest(double v) noexcept nogil:
    """dlib's real -> integer point coordinate: floor(v + 0.5)."""
    return <long long>floor(v + 0.5)


def predict(const unsigned char[:, :, ::1] image, long left, long top, long right, long bottom,
            const float[::1] initial, const int[:, :, :, ::1] splits, const float[:, :, ::1] thresholds,
            const float[:, :, :, ::1] leaves, const int[:, ::1] anchors, const float[:, :, ::1] deltas):
    """dlib's ``shape_predictor::operator()`` on one box: (L, 2) int64 landmark pixels.

    ``image`` (H, W, 1 or 3) uint8 (grey or RGB: intensity (R + G + B) / 3 in integers); the box's
    corners as dlib's rectangle; the arrays as `read_shape_predictor` returns them. Per cascade level
    the similarity from the mean shape to the current one is Umeyama's (means and sums in double, in
    order), written for 2-D without a decomposition: (1 / sigma) [[a + d, b - c], [c - b, a + d]]
    for the cross-covariance [[a, b], [c, d]]; then cast to float32 as dlib casts its matrix.
    """
    cdef Py_ssize_t H = image.shape[0], W = image.shape[1], channels = image.shape[2]
    cdef Py_ssize_t levels = splits.shape[0], trees = splits.shape[1], n_splits = splits.shape[2]
    cdef Py_ssize_t features = anchors.shape[1], size = initial.shape[0], L = size // 2
    if channels not in (1, 3) or leaves.shape[3] != size or thresholds.shape[2] != n_splits \
            or leaves.shape[2] != n_splits + 1 or deltas.shape[1] != features or anchors.shape[0] != levels:
        raise ValueError("predict: inconsistent arrays")
    shape_a = np.empty(size, np.float32)
    values_a = np.empty(features, np.float32)
    out_a = np.empty((L, 2), np.int64)
    cdef float[::1] shape = shape_a, values = values_a
    cdef long long[:, ::1] out = out_a
    cdef double w = right - left, h = bottom - top
    cdef double mfx, mfy, mtx, mty, sigma, ca, cb, cc, cd, fx, fy, tx, ty
    cdef float m00, m01, m10, m11, dx, dy, px, py
    cdef Py_ssize_t c, i, t, k, node, a
    cdef long long x, y
    cdef const float* leaf
    with nogil:
        for k in range(size):
            shape[k] = initial[k]
        for c in range(levels):
            mfx = mfy = mtx = mty = 0.0
            for i in range(L):
                mfx += initial[2 * i]
                mfy += initial[2 * i + 1]
                mtx += shape[2 * i]
                mty += shape[2 * i + 1]
            mfx /= L
            mfy /= L
            mtx /= L
            mty /= L
            sigma = ca = cb = cc = cd = 0.0
            for i in range(L):
                fx = initial[2 * i] - mfx
                fy = initial[2 * i + 1] - mfy
                tx = shape[2 * i] - mtx
                ty = shape[2 * i + 1] - mty
                sigma += fx * fx + fy * fy
                ca += tx * fx
                cb += tx * fy
                cc += ty * fx
                cd += ty * fy
            if sigma == 0:
                sigma = 1.0
                ca, cb, cc, cd = 1.0, 0.0, 0.0, 1.0
            m00 = <float>((ca + cd) / sigma)
            m01 = <float>((cb - cc) / sigma)
            m10 = <float>((cc - cb) / sigma)
            m11 = <float>((ca + cd) / sigma)
            for i in range(features):
                a = anchors[c, i]
                dx = deltas[c, i, 0]
                dy = deltas[c, i, 1]
                px = m00 * dx + m01 * dy
                py = m10 * dx + m11 * dy
                px = px + shape[2 * a]
                py = py + shape[2 * a + 1]
                x = _nearest(<double>px * w + left)
                y = _nearest(<double>py * h + top)
                if x < 0 or y < 0 or x >= W or y >= H:
                    values[i] = 0.0
                elif channels == 3:
                    values[i] = <float>((<int>image[y, x, 0] + image[y, x, 1] + image[y, x, 2]) // 3)
                else:
                    values[i] = <float>image[y, x, 0]
            for t in range(trees):
                node = 0
                while node < n_splits:
                    if values[splits[c, t, node, 0]] - values[splits[c, t, node, 1]] > thresholds[c, t, node]:
                        node = 2 * node + 1
                    else:
                        node = 2 * node + 2
                leaf = &leaves[c, t, node - n_splits, 0]
                for k in range(size):
                    shape[k] = shape[k] + leaf[k]
        for i in range(L):
            out[i, 0] = _nearest(<double>shape[2 * i] * w + left)
            out[i, 1] = _nearest(<double>shape[2 * i + 1] * h + top)
    return out_a
