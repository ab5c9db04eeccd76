# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The photometric stage's colour term and its gradient in one compiled pass (`core.fitting.colour_term`).

From the object-space points of an observed patch and each image's rotation to the robust colour
cost, in one call: the points rotated into each camera, vertex normals (area-weighted sums of the
incident triangles' normals, normalised), the images' colours sampled bilinearly at the projected
vertices, SH shading, the albedo in closed form from all images, the Geman-McClure cost; then its
gradient with respect to the points, the rotations, the scales and the translations, by hand.
The same arithmetic as composing `core.mesh.PatchNormals`, `core.sampling.sample_points` and
`core.fitting.shading_cost.shading_cost` (float32, sums over images in float64), which stay the
reference and the fallback. The rotation is done here, not by the caller: it and its two
backward products cost the torch graph three batched products on points-first layouts (about
1 ms a call), here a pass over the points each.

The images are independent but for the albedo (a sum over images per vertex), so the pass is an
image-parallel forward, a vertex-parallel albedo and cost, and an image-parallel backward, on
``threads`` OpenMP threads (images taken one at a time, so a busy core only slows its own share);
the sums keep a fixed order, so the result does not depend on the thread count.
"""
from cython.parallel cimport prange

from core.fitting._sh cimport sh_basis, sh_irradiance
from libc.math cimport floor, sqrt
from libc.string cimport memset

import numpy as np

cimport numpy as cnp

cnp.import_array()


cdef inline float _tap(const float* plane, Py_ssize_t x, Py_ssize_t y, Py_ssize_t w,
                       Py_ssize_t h) noexcept nogil:
    """One pixel of an image plane (H, W), 0 outside it (grid_sample's zero padding)."""
    if x < 0 or y < 0 or x >= w or y >= h:
        return 0.0
    return plane[y * w + x]


cdef void _rotate(const float* X, const float* R, Py_ssize_t N, float* P) noexcept nogil:
    """``P = R X`` for each of N points (rows of 3)."""
    cdef Py_ssize_t n
    cdef float x, y, z
    for n in range(N):
        x, y, z = X[3 * n], X[3 * n + 1], X[3 * n + 2]
        P[3 * n] = R[0] * x + R[1] * y + R[2] * z
        P[3 * n + 1] = R[3] * x + R[4] * y + R[5] * z
        P[3 * n + 2] = R[6] * x + R[7] * y + R[8] * z


cdef void _rotate_back(const float* dP, const float* X, const float* R, Py_ssize_t N, float* dX,
                       float* dR) noexcept nogil:
    """The gradient of ``P = R X`` flowing back from ``dP``: ``dX = R^T dP`` per point and
    ``dR = sum_n dP_n X_n^T`` (summed in double)."""
    cdef Py_ssize_t n, i
    cdef float a, b, c
    cdef double acc[9]
    for i in range(9):
        acc[i] = 0.0
    for n in range(N):
        a, b, c = dP[3 * n], dP[3 * n + 1], dP[3 * n + 2]
        dX[3 * n] = R[0] * a + R[3] * b + R[6] * c
        dX[3 * n + 1] = R[1] * a + R[4] * b + R[7] * c
        dX[3 * n + 2] = R[2] * a + R[5] * b + R[8] * c
        for i in range(3):
            acc[3 * i] += dP[3 * n + i] * X[3 * n]
            acc[3 * i + 1] += dP[3 * n + i] * X[3 * n + 1]
            acc[3 * i + 2] += dP[3 * n + i] * X[3 * n + 2]
    for i in range(9):
        dR[i] = <float>acc[i]


cdef void _forward_image(const float* P, const float* wg, const float* image, Py_ssize_t H, Py_ssize_t W,
                         float sc, float tu, float tv, const float* sh, const float* f,
                         const cnp.int64_t* tri, const cnp.int64_t* tgt, const cnp.int64_t* act, Py_ssize_t A,
                         Py_ssize_t U, float eps, float* S, float* nrm, float* lng, float* sha, float* obs,
                         float* slo) noexcept nogil:
    """One image: the patch's normal sums ``S`` (over its A triangles ``act``) and normals, shading,
    colours and colour slopes."""
    cdef Py_ssize_t a, t, u, k, c, i0, i1, i2, j, x0, y0
    cdef float ax, ay, az, bx, by, bz, fx, fy, fz, nx, ny, nz, norm, ix, iy, wx, wy
    cdef float v00, v01, v10, v11
    cdef float b[9]
    cdef const float* plane
    for a in range(A):
        t = act[a]
        i0, i1, i2 = 3 * tri[3 * t], 3 * tri[3 * t + 1], 3 * tri[3 * t + 2]
        ax, ay, az = P[i1] - P[i0], P[i1 + 1] - P[i0 + 1], P[i1 + 2] - P[i0 + 2]
        bx, by, bz = P[i2] - P[i0], P[i2 + 1] - P[i0 + 1], P[i2 + 2] - P[i0 + 2]
        fx = ay * bz - az * by
        fy = az * bx - ax * bz
        fz = ax * by - ay * bx
        for k in range(3):
            j = tgt[3 * t + k]
            if j >= 0:
                S[3 * j] += fx
                S[3 * j + 1] += fy
                S[3 * j + 2] += fz
    for u in range(U):
        if wg[u] == 0:  # adds nothing to the albedo or the cost
            continue
        norm = sqrt(S[3 * u] * S[3 * u] + S[3 * u + 1] * S[3 * u + 1] + S[3 * u + 2] * S[3 * u + 2])
        lng[u] = norm
        if norm < eps:
            norm = eps
        nx, ny, nz = S[3 * u] / norm, S[3 * u + 1] / norm, S[3 * u + 2] / norm
        nrm[3 * u], nrm[3 * u + 1], nrm[3 * u + 2] = nx, ny, nz
        sh_basis(f, nx, ny, nz, b)
        ix = sc * P[3 * u] + tu
        iy = tv - sc * P[3 * u + 1]
        x0 = <Py_ssize_t>floor(ix)
        y0 = <Py_ssize_t>floor(iy)
        wx = ix - x0
        wy = iy - y0
        for c in range(3):
            sha[3 * u + c] = sh_irradiance(b, sh, c)
            plane = image + c * H * W
            v00 = _tap(plane, x0, y0, W, H)
            v01 = _tap(plane, x0 + 1, y0, W, H)
            v10 = _tap(plane, x0, y0 + 1, W, H)
            v11 = _tap(plane, x0 + 1, y0 + 1, W, H)
            obs[3 * u + c] = (v00 * (1 - wx) + v01 * wx) * (1 - wy) + (v10 * (1 - wx) + v11 * wx) * wy
            slo[6 * u + 2 * c] = (v01 - v00) * (1 - wy) + (v11 - v10) * wy
            slo[6 * u + 2 * c + 1] = (v10 - v00) * (1 - wx) + (v11 - v01) * wx


cdef void _backward_image(const float* P, const float* wg, float sc, const float* sh, const float* f,
                          const cnp.int64_t* tri, const cnp.int64_t* tgt, const cnp.int64_t* act, Py_ssize_t A,
                          Py_ssize_t U, float eps, const float* albedo, const double* raw, const double* total, const double* d_raw,
                          float d_lam_term, float s2, float s4, float* S, const float* nrm, const float* lng,
                          const float* sha, const float* obs, const float* slo, float* dP,
                          float* d_scale, float* d_trans) noexcept nogil:
    """One image: d cost / d its points, scale and translation (``S`` is overwritten as scratch)."""
    cdef Py_ssize_t a, t, u, k, c, i0, i1, i2, j
    cdef float ax, ay, az, bx, by, bz, fx, fy, fz, nx, ny, nz, norm, sv, o, wgt, r, r2, dr, d_s, d_o
    cdef float du, dv, gx, gy, gz, dx, dy, dz, dot, ds = 0.0, dtu = 0.0, dtv = 0.0
    cdef float db[9]
    for u in range(U):
        wgt = wg[u]
        if wgt == 0:  # no gradient: nothing flows into this vertex's normal
            S[3 * u] = 0.0
            S[3 * u + 1] = 0.0
            S[3 * u + 2] = 0.0
            continue
        for k in range(9):
            db[k] = 0.0
        du = 0.0
        dv = 0.0
        for c in range(3):
            j = 3 * u + c
            sv = sha[j]
            o = obs[j]
            r = o - albedo[j] * sv
            r2 = r * r
            dr = wgt * s4 * r / ((s2 + r2) * (s2 + r2))
            # d num = d raw / total; d total = -d raw raw / total + d lam prior_weight / (3 U)
            d_s = (-dr * albedo[j] + wgt * o * <float>(d_raw[j] / total[j])
                   + 2.0 * wgt * sv * (<float>(-d_raw[j] * raw[j] / total[j]) + d_lam_term))
            d_o = dr + wgt * sv * <float>(d_raw[j] / total[j])
            for k in range(9):
                db[k] += d_s * sh[3 * k + c]
            du += d_o * slo[6 * u + 2 * c]
            dv += d_o * slo[6 * u + 2 * c + 1]
        # The colours' positions.
        dP[3 * u] += du * sc
        dP[3 * u + 1] -= dv * sc
        ds += du * P[3 * u] - dv * P[3 * u + 1]
        dtu += du
        dtv += dv
        # The SH basis (a quadratic in the normal), then the normalisation.
        nx, ny, nz = nrm[3 * u], nrm[3 * u + 1], nrm[3 * u + 2]
        gx = f[3] * db[3] + f[4] * ny * db[4] + f[7] * nz * db[7] + 2.0 * f[8] * nx * db[8]
        gy = f[1] * db[1] + f[4] * nx * db[4] + f[5] * nz * db[5] - 2.0 * f[8] * ny * db[8]
        gz = f[2] * db[2] + f[5] * ny * db[5] + 6.0 * f[6] * nz * db[6] + f[7] * nx * db[7]
        norm = lng[u]
        if norm > eps:
            dot = nx * gx + ny * gy + nz * gz
            S[3 * u] = (gx - nx * dot) / norm
            S[3 * u + 1] = (gy - ny * dot) / norm
            S[3 * u + 2] = (gz - nz * dot) / norm
        else:
            S[3 * u] = gx / eps
            S[3 * u + 1] = gy / eps
            S[3 * u + 2] = gz / eps
    d_scale[0] = ds
    d_trans[0] = dtu
    d_trans[1] = dtv
    # Each triangle's normal feeds the sums of its corners in the patch: f = a x b, so d a = b x d f
    # and d b = d f x a.
    for a in range(A):
        t = act[a]
        fx = 0.0
        fy = 0.0
        fz = 0.0
        for k in range(3):
            j = tgt[3 * t + k]
            if j >= 0:
                fx += S[3 * j]
                fy += S[3 * j + 1]
                fz += S[3 * j + 2]
        if fx == 0 and fy == 0 and fz == 0:
            continue
        i0, i1, i2 = 3 * tri[3 * t], 3 * tri[3 * t + 1], 3 * tri[3 * t + 2]
        ax, ay, az = P[i1] - P[i0], P[i1 + 1] - P[i0 + 1], P[i1 + 2] - P[i0 + 2]
        bx, by, bz = P[i2] - P[i0], P[i2 + 1] - P[i0 + 1], P[i2 + 2] - P[i0 + 2]
        gx, gy, gz = by * fz - bz * fy, bz * fx - bx * fz, bx * fy - by * fx  # d a
        dx, dy, dz = fy * az - fz * ay, fz * ax - fx * az, fx * ay - fy * ax  # d b
        dP[i1] += gx
        dP[i1 + 1] += gy
        dP[i1 + 2] += gz
        dP[i2] += dx
        dP[i2 + 1] += dy
        dP[i2 + 2] += dz
        dP[i0] -= gx + dx
        dP[i0 + 1] -= gy + dy
        dP[i0 + 2] -= gz + dz


def colour_term(const float[:, :, ::1] shape, const float[:, :, ::1] rotation, const float[::1] scale,
                const float[:, ::1] trans,
                const float[:, :, :, ::1] images, const cnp.int64_t[:, ::1] triangles,
                const cnp.int64_t[:, ::1] targets, const float[:, ::1] weights, const float[:, :, ::1] sh,
                const float[:, ::1] prior, const double[::1] basis, double prior_weight, double sigma,
                double eps, int threads=1, dict scratch=None, const cnp.int64_t[::1] active_ptr=None,
                const cnp.int64_t[::1] active=None):
    """Cost and gradient of the colour term (see `core.fitting.colour_term.colour_term`).

    Shapes: shape (G, N, 3) object space, the patch's U vertices first; rotation (G, 3, 3) each image's
    (camera points ``R X``); scale (G,); trans (G, 2); images (G, 3, H, W); triangles (T, 3) rows of
    ``shape``; targets (T, 3) the patch row each corner's normal is summed into, or -1; weights
    (G, U); sh (G, 9, 3); prior (U, 3); basis (9,) the SH basis factors. Returns (cost, d_shape
    (G, N, 3), d_rotation (G, 3, 3), d_scale (G,), d_trans (G, 2)).

    ``active_ptr`` (G + 1,) and ``active``: image g's triangles are ``active[active_ptr[g]:active_ptr[g + 1]]``,
    ascending: those with a corner of weight in it (the others add only to normals no term reads;
    about a third of them on a rig's photos); None: every triangle in every image. The same result.

    ``scratch``: a dict in which the pass keeps its working arrays for the next call of the same
    shapes (about 6 MB for a rig's photos: allocating and zeroing them anew took up to a tenth of
    each call on one thread); one per problem and thread, never shared by calls running at the
    same time.
    """
    cdef Py_ssize_t G = shape.shape[0], N = shape.shape[1], U = weights.shape[1]
    cdef Py_ssize_t T = triangles.shape[0], H = images.shape[2], W = images.shape[3]
    cdef Py_ssize_t g, u, c, j, k
    if (U > N or weights.shape[0] != G or images.shape[0] != G or images.shape[1] != 3 or sh.shape[0] != G
            or prior.shape[0] != U or scale.shape[0] != G or trans.shape[0] != G or targets.shape[0] != T
            or basis.shape[0] != 9 or rotation.shape[0] != G or rotation.shape[1] != 3
            or rotation.shape[2] != 3):
        raise ValueError("colour_term: inconsistent shapes")
    if active_ptr is None or active is None:
        active_ptr = np.arange(G + 1, dtype=np.int64) * T
        active = np.tile(np.arange(T, dtype=np.int64), G)
    if active_ptr.shape[0] != G + 1 or active_ptr[0] != 0 or active_ptr[G] != active.shape[0]:
        raise ValueError("colour_term: inconsistent active triangles")
    threads = max(1, min(threads, G))
    # Working arrays, from ``scratch`` where it holds them for these shapes. The sums start at zero
    # (zeroed below, without the lock); the per-vertex values are written before they are read
    # (only where a vertex has a weight in the image, and only read there).
    arrays = None if scratch is None else scratch.get((G, N, U))
    if arrays is None:
        arrays = (np.empty((G, U, 3), np.float32),  # unnormalised normal sums, then d cost / d them
                  np.empty((G, U, 3), np.float32),  # normals
                  np.empty((G, U), np.float32),  # their lengths
                  np.empty((G, U, 3), np.float32),  # shading
                  np.empty((G, U, 3), np.float32),  # observed colours
                  np.empty((G, U, 3, 2), np.float32),  # d colour / d (u, v)
                  np.empty((4, U, 3), np.float64),  # total (+ lam), unclamped albedo, d cost / d it, num
                  np.empty((U, 3), np.float32),  # albedo
                  np.empty(U, np.float64),  # per-vertex cost
                  np.empty((G, N, 3), np.float32),  # camera-space points
                  np.empty((G, N, 3), np.float32))  # d cost / d them (zeroed below)
        if scratch is not None:
            scratch.clear()
            scratch[(G, N, U)] = arrays
    summed_a, normal_a, length_a, shading_a, observed_a, slope_a, sums_a, albedo_a, vertex_cost_a, points_a, \
        d_points_a = arrays
    factors_a = np.asarray(basis, np.float32)
    d_shape_a = np.empty((G, N, 3), np.float32)
    d_rotation_a = np.empty((G, 3, 3), np.float32)
    d_scale_a = np.zeros(G, np.float32)
    d_trans_a = np.zeros((G, 2), np.float32)
    cdef float[:, :, ::1] S = summed_a, nrm = normal_a, sha = shading_a, obs = observed_a, dP = d_points_a
    cdef float[:, :, ::1] points = points_a, d_shape = d_shape_a, d_rotation = d_rotation_a
    cdef float[:, :, :, ::1] slo = slope_a
    cdef float[:, ::1] lng = length_a, albedo_m = albedo_a, d_trans = d_trans_a
    cdef float[::1] d_scale = d_scale_a, factors = factors_a
    cdef double[:, :, ::1] sums = sums_a
    cdef double[::1] vertex_cost = vertex_cost_a
    cdef float* albedo = &albedo_m[0, 0]
    cdef double* total = &sums[0, 0, 0]
    cdef double* raw = &sums[1, 0, 0]
    cdef double* d_raw = &sums[2, 0, 0]
    cdef double* num = &sums[3, 0, 0]
    cdef float s2 = sigma * sigma, s4 = 2.0 * s2 * s2, d_lam_term = 0.0, feps = eps
    cdef float wgt, r, r2, dr
    cdef double cost = 0.0, mean = 0.0, lam, d_lam = 0.0
    cdef bint lam_free
    with nogil:
        memset(&S[0, 0, 0], 0, G * U * 3 * sizeof(float))
        memset(&sha[0, 0, 0], 0, G * U * 3 * sizeof(float))  # the albedo's sums read every image's
        memset(&obs[0, 0, 0], 0, G * U * 3 * sizeof(float))  # (weighted by 0 where unseen)
        memset(total, 0, 4 * U * 3 * sizeof(double))
        memset(&vertex_cost[0], 0, U * sizeof(double))
        memset(&dP[0, 0, 0], 0, G * N * 3 * sizeof(float))
        # Forward, per image: camera points, normals, colours, shading.
        for g in prange(G, schedule="dynamic", num_threads=threads):
            _rotate(&shape[g, 0, 0], &rotation[g, 0, 0], N, &points[g, 0, 0])
            _forward_image(&points[g, 0, 0], &weights[g, 0], &images[g, 0, 0, 0], H, W, scale[g], trans[g, 0],
                           trans[g, 1], &sh[g, 0, 0], &factors[0], &triangles[0, 0], &targets[0, 0],
                           &active[active_ptr[g]], active_ptr[g + 1] - active_ptr[g], U, feps,
                           &S[g, 0, 0], &nrm[g, 0, 0], &lng[g, 0], &sha[g, 0, 0], &obs[g, 0, 0], &slo[g, 0, 0, 0])
        # The albedo in closed form from all images, leaning on the prior by prior_weight x the mean
        # denominator; per vertex the cost and d cost / d the unclamped albedo (images in order).
        for u in prange(U, schedule="static", num_threads=threads):
            for c in range(3):
                for g in range(G):
                    wgt = weights[g, u]
                    num[3 * u + c] += wgt * sha[g, u, c] * obs[g, u, c]
                    total[3 * u + c] += wgt * sha[g, u, c] * sha[g, u, c]
        for j in range(3 * U):
            mean = mean + total[j]
        mean = mean / (3 * U)
        lam_free = mean > 1e-6
        lam = prior_weight * (mean if lam_free else 1e-6)
        for u in prange(U, schedule="static", num_threads=threads):
            for c in range(3):
                j = 3 * u + c
                total[j] = total[j] + lam
                raw[j] = (num[j] + lam * prior[u, c]) / total[j]
                albedo[j] = <float>(0.0 if raw[j] < 0.0 else (1.0 if raw[j] > 1.0 else raw[j]))
                for g in range(G):
                    wgt = weights[g, u]
                    if wgt == 0:
                        continue
                    r = obs[g, u, c] - albedo[j] * sha[g, u, c]
                    r2 = r * r
                    vertex_cost[u] += wgt * (s2 * r2 / (s2 + r2))
                    dr = wgt * s4 * r / ((s2 + r2) * (s2 + r2))
                    d_raw[j] -= dr * sha[g, u, c]
                if raw[j] < 0.0 or raw[j] > 1.0:
                    d_raw[j] = 0.0
        for u in range(U):
            cost = cost + vertex_cost[u]
            for c in range(3):
                j = 3 * u + c
                if lam_free:
                    d_lam = d_lam + d_raw[j] * (prior[u, c] - raw[j]) / total[j]
        if lam_free:
            d_lam_term = <float>(d_lam * prior_weight / (3 * U))
        # Backward, per image: shading and colours -> normals and positions -> points, scale, trans ->
        # object-space points and rotation.
        for g in prange(G, schedule="dynamic", num_threads=threads):
            _backward_image(&points[g, 0, 0], &weights[g, 0], scale[g], &sh[g, 0, 0], &factors[0], &triangles[0, 0],
                            &targets[0, 0], &active[active_ptr[g]], active_ptr[g + 1] - active_ptr[g], U, feps, albedo, raw, total, d_raw, d_lam_term, s2, s4, &S[g, 0, 0],
                            &nrm[g, 0, 0], &lng[g, 0], &sha[g, 0, 0], &obs[g, 0, 0], &slo[g, 0, 0, 0], &dP[g, 0, 0],
                            &d_scale[g], &d_trans[g, 0])
            _rotate_back(&dP[g, 0, 0], &shape[g, 0, 0], &rotation[g, 0, 0], N, &d_shape[g, 0, 0],
                         &d_rotation[g, 0, 0])
    return cost, d_shape_a, d_rotation_a, d_scale_a, d_trans_a
