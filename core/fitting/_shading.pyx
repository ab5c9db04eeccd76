# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The photometric stage's colour term and its gradient in one compiled pass (`core.fitting.colour_term`).

From the camera-space points of an observed patch to the robust colour cost, in one call: vertex
normals (area-weighted sums of the incident triangles' normals, normalised), the images' colours
sampled bilinearly at the projected vertices, SH shading, the albedo in closed form from all
images, the Geman-McClure cost; then its gradient with respect to the points, the scales and the
translations, by hand. The same arithmetic as composing `core.mesh.PatchNormals`,
`core.sampling.sample_points` and `core.fitting.shading_cost.shading_cost` (float32, sums over
images in float64), which stay the reference and the fallback.
"""
from libc.math cimport floor, sqrt

import numpy as np

cimport numpy as cnp

cnp.import_array()


cdef inline float _tap(const float* plane, Py_ssize_t x, Py_ssize_t y, Py_ssize_t w,
                       Py_ssize_t h) noexcept nogil:
    """One pixel of an image plane (H, W), 0 outside it (grid_sample's zero padding)."""
    if x < 0 or y < 0 or x >= w or y >= h:
        return 0.0
    return plane[y * w + x]


def colour_term(const float[:, :, ::1] points, const float[::1] scale, const float[:, ::1] trans,
                const float[:, :, :, ::1] images, const cnp.int64_t[:, ::1] triangles, const cnp.int64_t[:, ::1] targets,
                const float[:, ::1] weights, const float[:, :, ::1] sh, const float[:, ::1] prior,
                const double[::1] basis, double prior_weight, double sigma, double eps):
    """Cost and gradient of the colour term (see `core.fitting.colour_term.colour_term`).

    Shapes: points (G, N, 3) camera space, the patch's U vertices first; scale (G,); trans (G, 2);
    images (G, 3, H, W); triangles (T, 3) rows of ``points``; targets (T, 3) the patch row each
    corner's normal is summed into, or -1; weights (G, U); sh (G, 9, 3); prior (U, 3); basis (9,) the
    SH basis factors. Returns (cost, d_points (G, N, 3), d_scale (G,), d_trans (G, 2)).
    """
    cdef Py_ssize_t G = points.shape[0], N = points.shape[1], U = weights.shape[1]
    cdef Py_ssize_t T = triangles.shape[0], H = images.shape[2], W = images.shape[3]
    cdef Py_ssize_t g, u, t, k, c, i, j, x0, y0
    if U > N or weights.shape[0] != G or images.shape[0] != G or sh.shape[0] != G or prior.shape[0] != U:
        raise ValueError("colour_term: inconsistent shapes")
    summed_a = np.zeros((G, U, 3), np.float32)   # unnormalised normal sums
    normal_a = np.zeros((G, U, 3), np.float32)
    length_a = np.zeros((G, U), np.float32)
    shading_a = np.zeros((G, U, 3), np.float32)
    observed_a = np.zeros((G, U, 3), np.float32)
    slope_a = np.zeros((G, U, 3, 2), np.float32)  # d colour / d (u, v)
    num_a = np.zeros((U, 3), np.float64)
    den_a = np.zeros((U, 3), np.float64)
    d_raw_a = np.zeros((U, 3), np.float64)
    d_points_a = np.zeros((G, N, 3), np.float32)
    d_scale_a = np.zeros(G, np.float32)
    d_trans_a = np.zeros((G, 2), np.float32)
    cdef float[:, :, ::1] summed = summed_a, normal = normal_a, shading = shading_a, observed = observed_a
    cdef float[:, :, :, ::1] slope = slope_a
    cdef float[:, ::1] length = length_a
    cdef double[:, ::1] num = num_a, den = den_a, d_raw = d_raw_a
    cdef float[:, :, ::1] d_points = d_points_a
    cdef float[::1] d_scale = d_scale_a
    cdef float[:, ::1] d_trans = d_trans_a
    cdef float ax, ay, az, bx, by, bz, fx, fy, fz, nx, ny, nz, norm, s, o, wgt, ix, iy, wx, wy
    cdef float v00, v01, v10, v11, a_c, r, r2, dr, d_s, d_o, du, dv, gx, gy, gz, dot
    cdef float b[9]
    cdef float db[9]
    cdef float f[9]  # the basis factors
    cdef float L[27]  # one image's SH lighting, (9, 3)
    cdef float s2 = sigma * sigma, s4 = 2.0 * s2 * s2, d_lam_term
    cdef double cost = 0.0, mean = 0.0, lam, total, raw, d_lam = 0.0
    cdef bint lam_free
    cdef const float* plane
    cdef float[:, ::1] albedo
    cdef double[:, ::1] total_m
    albedo_a = np.zeros((U, 3), np.float32)
    total_a = np.zeros((U, 3), np.float64)
    albedo = albedo_a
    total_m = total_a

    for k in range(9):
        f[k] = basis[k]
    with nogil:
        # Forward, per image: normals, colours, shading; the albedo's sums over images.
        for g in range(G):
            for k in range(9):
                for c in range(3):
                    L[3 * k + c] = sh[g, k, c]
            for t in range(T):
                i = triangles[t, 0]
                ax = points[g, triangles[t, 1], 0] - points[g, i, 0]
                ay = points[g, triangles[t, 1], 1] - points[g, i, 1]
                az = points[g, triangles[t, 1], 2] - points[g, i, 2]
                bx = points[g, triangles[t, 2], 0] - points[g, i, 0]
                by = points[g, triangles[t, 2], 1] - points[g, i, 1]
                bz = points[g, triangles[t, 2], 2] - points[g, i, 2]
                fx = ay * bz - az * by
                fy = az * bx - ax * bz
                fz = ax * by - ay * bx
                for k in range(3):
                    j = targets[t, k]
                    if j >= 0:
                        summed[g, j, 0] += fx
                        summed[g, j, 1] += fy
                        summed[g, j, 2] += fz
            for u in range(U):
                if weights[g, u] == 0:  # adds nothing to the albedo or the cost
                    continue
                norm = sqrt(summed[g, u, 0] * summed[g, u, 0] + summed[g, u, 1] * summed[g, u, 1]
                            + summed[g, u, 2] * summed[g, u, 2])
                length[g, u] = norm
                if norm < eps:
                    norm = eps
                nx = summed[g, u, 0] / norm
                ny = summed[g, u, 1] / norm
                nz = summed[g, u, 2] / norm
                normal[g, u, 0] = nx
                normal[g, u, 1] = ny
                normal[g, u, 2] = nz
                b[0] = f[0]
                b[1] = f[1] * ny
                b[2] = f[2] * nz
                b[3] = f[3] * nx
                b[4] = f[4] * nx * ny
                b[5] = f[5] * ny * nz
                b[6] = f[6] * (3.0 * nz * nz - 1.0)
                b[7] = f[7] * nx * nz
                b[8] = f[8] * (nx * nx - ny * ny)
                ix = scale[g] * points[g, u, 0] + trans[g, 0]
                iy = trans[g, 1] - scale[g] * points[g, u, 1]
                x0 = <Py_ssize_t>floor(ix)
                y0 = <Py_ssize_t>floor(iy)
                wx = ix - x0
                wy = iy - y0
                wgt = weights[g, u]
                for c in range(3):
                    s = 0.0
                    for k in range(9):
                        s = s + b[k] * L[3 * k + c]
                    shading[g, u, c] = s
                    plane = &images[g, c, 0, 0]
                    v00 = _tap(plane, x0, y0, W, H)
                    v01 = _tap(plane, x0 + 1, y0, W, H)
                    v10 = _tap(plane, x0, y0 + 1, W, H)
                    v11 = _tap(plane, x0 + 1, y0 + 1, W, H)
                    o = (v00 * (1 - wx) + v01 * wx) * (1 - wy) + (v10 * (1 - wx) + v11 * wx) * wy
                    observed[g, u, c] = o
                    slope[g, u, c, 0] = (v01 - v00) * (1 - wy) + (v11 - v10) * wy
                    slope[g, u, c, 1] = (v10 - v00) * (1 - wx) + (v11 - v01) * wx
                    num[u, c] += wgt * s * o
                    den[u, c] += wgt * s * s
        # The albedo in closed form, leaning on the prior by prior_weight x the mean denominator.
        for u in range(U):
            for c in range(3):
                mean = mean + den[u, c]
        mean = mean / (3 * U)
        lam_free = mean > 1e-6
        lam = prior_weight * (mean if lam_free else 1e-6)
        for u in range(U):
            for c in range(3):
                total = den[u, c] + lam
                total_m[u, c] = total
                raw = (num[u, c] + lam * prior[u, c]) / total
                num[u, c] = raw  # num now holds the unclamped albedo
                albedo[u, c] = <float>(0.0 if raw < 0.0 else (1.0 if raw > 1.0 else raw))
        # The cost; d cost / d raw albedo.
        for g in range(G):
            for u in range(U):
                wgt = weights[g, u]
                if wgt == 0:
                    continue
                for c in range(3):
                    r = observed[g, u, c] - albedo[u, c] * shading[g, u, c]
                    r2 = r * r
                    cost += wgt * (s2 * r2 / (s2 + r2))
                    dr = wgt * s4 * r / ((s2 + r2) * (s2 + r2))
                    d_raw[u, c] -= dr * shading[g, u, c]
        for u in range(U):
            for c in range(3):
                raw = num[u, c]
                if raw < 0.0 or raw > 1.0:
                    d_raw[u, c] = 0.0
                if lam_free:
                    d_lam += d_raw[u, c] * (prior[u, c] - raw) / total_m[u, c]
        # Backward, per image: shading and colours -> normals and positions -> points, scale, trans.
        d_lam_term = <float>(d_lam * prior_weight / (3 * U)) if lam_free else 0.0
        for g in range(G):
            for k in range(9):
                for c in range(3):
                    L[3 * k + c] = sh[g, k, c]
            for u in range(U):
                wgt = weights[g, u]
                if wgt == 0:
                    continue
                for k in range(9):
                    db[k] = 0.0
                du = 0.0
                dv = 0.0
                for c in range(3):
                    s = shading[g, u, c]
                    o = observed[g, u, c]
                    r = o - albedo[u, c] * s
                    r2 = r * r
                    dr = wgt * s4 * r / ((s2 + r2) * (s2 + r2))
                    raw = num[u, c]
                    total = total_m[u, c]
                    # d num = d raw / total; d den = -d raw raw / total + d lam prior_weight / (3 U)
                    d_s = (-dr * albedo[u, c] + wgt * o * <float>(d_raw[u, c] / total)
                           + 2.0 * wgt * s * (<float>(-d_raw[u, c] * raw / total) + d_lam_term))
                    d_o = dr + wgt * s * <float>(d_raw[u, c] / total)
                    for k in range(9):
                        db[k] += d_s * L[3 * k + c]
                    du += d_o * slope[g, u, c, 0]
                    dv += d_o * slope[g, u, c, 1]
                # The colours' positions.
                d_points[g, u, 0] += du * scale[g]
                d_points[g, u, 1] -= dv * scale[g]
                d_scale[g] += du * points[g, u, 0] - dv * points[g, u, 1]
                d_trans[g, 0] += du
                d_trans[g, 1] += dv
                # The SH basis (a quadratic in the normal), then the normalisation.
                nx = normal[g, u, 0]
                ny = normal[g, u, 1]
                nz = normal[g, u, 2]
                gx = f[3] * db[3] + f[4] * ny * db[4] + f[7] * nz * db[7] + 2.0 * f[8] * nx * db[8]
                gy = f[1] * db[1] + f[4] * nx * db[4] + f[5] * nz * db[5] - 2.0 * f[8] * ny * db[8]
                gz = f[2] * db[2] + f[5] * ny * db[5] + 6.0 * f[6] * nz * db[6] + f[7] * nx * db[7]
                norm = length[g, u]
                if norm > eps:
                    dot = nx * gx + ny * gy + nz * gz
                    summed[g, u, 0] = (gx - nx * dot) / norm
                    summed[g, u, 1] = (gy - ny * dot) / norm
                    summed[g, u, 2] = (gz - nz * dot) / norm
                else:
                    summed[g, u, 0] = gx / eps
                    summed[g, u, 1] = gy / eps
                    summed[g, u, 2] = gz / eps
            # summed now holds d cost / d normal sum where the vertex has a weight; zero it elsewhere.
            for u in range(U):
                if weights[g, u] == 0:
                    summed[g, u, 0] = 0.0
                    summed[g, u, 1] = 0.0
                    summed[g, u, 2] = 0.0
            for t in range(T):
                fx = 0.0
                fy = 0.0
                fz = 0.0
                for k in range(3):
                    j = targets[t, k]
                    if j >= 0:
                        fx += summed[g, j, 0]
                        fy += summed[g, j, 1]
                        fz += summed[g, j, 2]
                if fx == 0 and fy == 0 and fz == 0:
                    continue
                i = triangles[t, 0]
                ax = points[g, triangles[t, 1], 0] - points[g, i, 0]
                ay = points[g, triangles[t, 1], 1] - points[g, i, 1]
                az = points[g, triangles[t, 1], 2] - points[g, i, 2]
                bx = points[g, triangles[t, 2], 0] - points[g, i, 0]
                by = points[g, triangles[t, 2], 1] - points[g, i, 1]
                bz = points[g, triangles[t, 2], 2] - points[g, i, 2]
                # f = a x b: d a = b x d f, d b = d f x a.
                j = triangles[t, 1]
                d_points[g, j, 0] += by * fz - bz * fy
                d_points[g, j, 1] += bz * fx - bx * fz
                d_points[g, j, 2] += bx * fy - by * fx
                j = triangles[t, 2]
                d_points[g, j, 0] += fy * az - fz * ay
                d_points[g, j, 1] += fz * ax - fx * az
                d_points[g, j, 2] += fx * ay - fy * ax
                d_points[g, i, 0] -= (by * fz - bz * fy) + (fy * az - fz * ay)
                d_points[g, i, 1] -= (bz * fx - bx * fz) + (fz * ax - fx * az)
                d_points[g, i, 2] -= (bx * fy - by * fx) + (fx * ay - fy * ax)
    return cost, d_points_a, d_scale_a, d_trans_a
