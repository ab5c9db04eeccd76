# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The texture fit's per-texel passes, compiled (`core.rig.texture_fit`): each photo's albedo
estimate and weight per texel (`photo_texels`), and their weighted median over the photos
(`weighted_median`, the torch path's picks to the bit).

Per texel of a photo: its point, normal and expression displacement interpolated from its triangle's
corners (the three products added in order, as `core.rig.texture_fit._at_texels`), the normal
normalised; visibility (inside the photo's window, in front in its z-buffer, not beside anything but
skin), the facing, rest and edge weights; the photo's colour there (bilinear, zeros outside, pixel
centres at integers: `core.sampling.sample_points`) over its SH shading, clamped to [0, 1]. The
torch composition in `core.rig.texture_fit._photo_estimates` stays the reference and the fallback:
the same visibility to the bit, the values and weights to float rounding (the tests compare the
two). Without the interpreter lock, so photos run side by side on threads.
"""
from libc.math cimport expf, floorf, sqrtf

from core.fitting._sh cimport sh_basis, sh_irradiance

import numpy as np

cimport numpy as cnp

cnp.import_array()


cdef inline float _tap(const float* plane, long x, long y, long w, long h) noexcept nogil:
    if x < 0 or y < 0 or x >= w or y >= h:
        return 0.0
    return plane[y * w + x]


cdef inline float _round_even(float x) noexcept nogil:
    """Round half to even (torch.round, numpy.rint) in float32."""
    cdef float f = floorf(x)
    cdef float r = x - f
    cdef float half = 0.5, one = 1.0
    if r > half:
        return f + one
    if r < half:
        return f
    return f + one if (<long>f) % 2 != 0 else f


def photo_texels(const float[:, ::1] at_vertices, const cnp.int64_t[:, ::1] corners, const float[:, ::1] bary,
                 const float[:, ::1] depth, const cnp.uint8_t[:, ::1] not_skin, long x0, long y0,
                 const double[:, ::1] ramp, const float[:, :, ::1] image, const float[:, ::1] sh,
                 const float[::1] factors, const float[:, ::1] prior, float depth_tol, float lo_z, float span_z,
                 float rest_mm, float rest_floor, float min_shading, float[:, ::1] values, float[::1] weights):
    """Fill ``values`` (M, 3) and ``weights`` (M,) for one photo.

    Shapes: at_vertices (V, 7) per head vertex: screen u, v, depth, unit normal, displacement (mm);
    corners (3, M) vertex ids and bary (3, M) barycentrics of the M texels; depth (h, w) the z-buffer
    of the photo's window at (x0, y0) (-inf where empty), not_skin (h, w) its pixels next to anything
    but skin; ramp (H, W) the photo's edge weight; image (3, H, W) RGB; sh (9, 3) its lighting,
    factors (9,) the SH basis factors; prior (M, 2) each texel's two prior weights. ``span_z`` is
    ``grazing[1] - grazing[0]``.
    """
    cdef Py_ssize_t M = corners.shape[1], V = at_vertices.shape[0], H = image.shape[1], W = image.shape[2]
    cdef Py_ssize_t h = depth.shape[0], w = depth.shape[1]
    if (corners.shape[0] != 3 or bary.shape[0] != 3 or bary.shape[1] != M or at_vertices.shape[1] != 7
            or not_skin.shape[0] != h or not_skin.shape[1] != w or ramp.shape[0] != H or ramp.shape[1] != W
            or image.shape[0] != 3 or sh.shape[0] != 9 or sh.shape[1] != 3 or factors.shape[0] != 9
            or prior.shape[0] != M or prior.shape[1] != 2 or values.shape[0] != M or values.shape[1] != 3
            or weights.shape[0] != M):
        raise ValueError("photo_texels: inconsistent shapes")
    if M and (np.asarray(corners).min() < 0 or np.asarray(corners).max() >= V):
        raise ValueError("photo_texels: a corner is not a vertex")
    cdef Py_ssize_t m, k, c, col, row, rc, rr
    cdef long ix0, iy0
    cdef float at[7]
    cdef float b[9]
    cdef float term, nx, ny, nz, norm, u, v, fx, fy, visible, facing, rest, edge, shade, colour, out, d
    cdef float sx = <float>(2.0 / max(W - 1, 1)), sy = <float>(2.0 / max(H - 1, 1))
    cdef float gx, gy, one = 1.0, two = 2.0, wm1 = W - 1, hm1 = H - 1
    cdef const float* plane
    with nogil:
        for m in range(M):
            for k in range(7):
                at[k] = at_vertices[corners[0, m], k] * bary[0, m]
            for k in range(7):
                term = at_vertices[corners[1, m], k] * bary[1, m]
                at[k] = at[k] + term
            for k in range(7):
                term = at_vertices[corners[2, m], k] * bary[2, m]
                at[k] = at[k] + term
            norm = sqrtf(at[3] * at[3] + at[4] * at[4] + at[5] * at[5])
            if norm < 1e-12:
                norm = 1e-12
            nx, ny, nz = at[3] / norm, at[4] / norm, at[5] / norm
            # visibility: the nearest pixel of the window (rounded half to even, as torch.round)
            col = <Py_ssize_t>_round_even(at[0]) - x0
            row = <Py_ssize_t>_round_even(at[1]) - y0
            visible = 1.0
            if col < 0 or col >= w or row < 0 or row >= h:
                visible = 0.0
            rc = 0 if col < 0 else (w - 1 if col >= w else col)
            rr = 0 if row < 0 else (h - 1 if row >= h else row)
            if not (at[2] >= depth[rr, rc] - depth_tol) or not_skin[rr, rc]:
                visible = 0.0
            rc = rc + x0
            rr = rr + y0
            rc = 0 if rc < 0 else (W - 1 if rc >= W else rc)
            rr = 0 if rr < 0 else (H - 1 if rr >= H else rr)
            edge = <float>ramp[rr, rc]
            facing = (nz - lo_z) / span_z
            facing = 0.0 if facing < 0.0 else (1.0 if facing > 1.0 else facing)
            d = at[6] / rest_mm
            rest = expf(-(d * d))
            if rest < rest_floor:
                rest = rest_floor
            weights[m] = visible * facing * rest * prior[m, 0] * prior[m, 1] * edge
            sh_basis(&factors[0], nx, ny, nz, b)
            # the colour: grid_sample's bilinear with align_corners, from the same normalised grid
            gx = at[0] * sx - one
            gy = at[1] * sy - one
            u = (gx + one) / two * wm1
            v = (gy + one) / two * hm1
            ix0 = <long>floorf(u)
            iy0 = <long>floorf(v)
            fx = u - ix0
            fy = v - iy0
            for c in range(3):
                shade = sh_irradiance(b, &sh[0, 0], c)
                if shade < min_shading:
                    shade = min_shading
                plane = &image[c, 0, 0]
                colour = ((one - fx) * (one - fy) * _tap(plane, ix0, iy0, W, H)
                          + fx * (one - fy) * _tap(plane, ix0 + 1, iy0, W, H)
                          + (one - fx) * fy * _tap(plane, ix0, iy0 + 1, W, H)
                          + fx * fy * _tap(plane, ix0 + 1, iy0 + 1, W, H))
                out = colour / shade
                values[m, c] = 0.0 if out < 0.0 else (1.0 if out > 1.0 else out)




def weighted_median(const float[:, :, ::1] values, const float[:, ::1] weights, float[:, ::1] out):
    """Per texel and channel, the weighted median of the G photos' values into ``out`` (N, C): the
    values in stable ascending order, their weights summed in that order (in double, each sum
    rounded to float32, as torch's ``cumsum``), the first whose sum reaches half the total (the
    lower one at a tie), as `core.rig.texture_fit.weighted_median` picks it, to the bit.

    Shapes: values (G, N, C); weights (G, N) >= 0; out (N, C).
    """
    cdef Py_ssize_t G = values.shape[0], N = values.shape[1], C = values.shape[2]
    if weights.shape[0] != G or weights.shape[1] != N or out.shape[0] != N or out.shape[1] != C:
        raise ValueError("weighted_median: inconsistent shapes")
    if G == 0:
        raise ValueError("weighted_median: no values")
    scratch_a = np.empty((3, G), np.float32)
    cdef float[:, ::1] scratch = scratch_a
    cdef float* sorted_values = &scratch[0, 0]
    cdef float* sorted_weights = &scratch[1, 0]
    cdef float* sums = &scratch[2, 0]
    cdef Py_ssize_t n, c, i, j, pick
    cdef float value, weight, half
    cdef double acc
    with nogil:
        for n in range(N):
            for c in range(C):
                for i in range(G):  # insertion sort of (value, weight) pairs: stable
                    value = values[i, n, c]
                    weight = weights[i, n]
                    j = i
                    while j > 0 and sorted_values[j - 1] > value:
                        sorted_values[j] = sorted_values[j - 1]
                        sorted_weights[j] = sorted_weights[j - 1]
                        j = j - 1
                    sorted_values[j] = value
                    sorted_weights[j] = weight
                acc = 0.0
                for i in range(G):
                    acc = acc + sorted_weights[i]
                    sums[i] = <float>acc
                half = <float>0.5 * sums[G - 1]
                pick = 0
                for i in range(G):
                    if sums[i] < half:
                        pick = pick + 1
                if pick > G - 1:
                    pick = G - 1
                out[n, c] = sorted_values[pick]
