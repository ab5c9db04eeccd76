# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Z-buffer inner loop of core.render.rasterize (one image).

The NumPy twin ``core.render._zbuffer_numpy`` evaluates the same float64 expressions in the same
order, so both give identical triangle ids: keep the two in step when changing either. (The kernel
tests the edge functions' signs before dividing by the area, which decides the same pixels: a
quotient of finite pixel-scale values is >= 0 exactly when the numerator is 0 or has the
denominator's sign.)
"""

from libc.math cimport ceil, floor, isfinite

import numpy as np


def zbuffer(const double[:, ::1] vertices, const long long[:, ::1] triangles,
            int height, int width, bint cull_backfaces):
    """Nearest triangle (largest depth) at every pixel centre.

    Args:
        vertices: (V, 3) float64 screen coordinates (u, v, depth), larger depth nearer.
        triangles: (F, 3) int64 vertex indices, validated by the caller.
        height, width: image size in pixels; pixel (i, j) has its centre at u = j, v = i.
        cull_backfaces: skip triangles whose screen-space winding is clockwise seen from the
            camera (positive signed area in (u, v) with v pointing down).

    Returns:
        tri_id (H, W) int64, -1 where no triangle covers the pixel centre; bary (H, W, 3) float64
        barycentric weights, 0 there; depth (H, W) float64, -inf there. A pixel centre on an edge
        is covered; ties in depth go to the lower triangle index.
    """
    tri_np = np.full((height, width), -1, dtype=np.int64)
    bary_np = np.zeros((height, width, 3), dtype=np.float64)
    depth_np = np.full((height, width), -np.inf, dtype=np.float64)
    cdef long long[:, ::1] tri_id = tri_np
    cdef double[:, :, ::1] bary = bary_np
    cdef double[:, ::1] depth = depth_np
    cdef Py_ssize_t f, i, j, k
    cdef Py_ssize_t n_faces = triangles.shape[0]
    cdef double p[9]
    cdef double x0, y0, z0, x1, y1, z1, x2, y2, z2, area, px, py, e0, e1, e2, w0, w1, w2, z
    cdef double umin, umax, vmin, vmax
    cdef int i0, i1, j0, j1
    cdef bint finite
    with nogil:
        for f in range(n_faces):
            finite = True
            for k in range(9):  # corner k // 3, coordinate k % 3
                p[k] = vertices[triangles[f, k // 3], k % 3]
                finite = finite and isfinite(p[k])
            if not finite:
                continue
            x0, y0, z0 = p[0], p[1], p[2]
            x1, y1, z1 = p[3], p[4], p[5]
            x2, y2, z2 = p[6], p[7], p[8]
            area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
            if area == 0.0 or (cull_backfaces and area > 0.0):
                continue
            umin = min(x0, min(x1, x2))
            umax = max(x0, max(x1, x2))
            vmin = min(y0, min(y1, y2))
            vmax = max(y0, max(y1, y2))
            if umax < 0.0 or vmax < 0.0 or umin > width - 1 or vmin > height - 1:
                continue
            j0 = <int>max(ceil(umin), 0.0)
            j1 = <int>min(floor(umax), <double>(width - 1))
            i0 = <int>max(ceil(vmin), 0.0)
            i1 = <int>min(floor(vmax), <double>(height - 1))
            for i in range(i0, i1 + 1):
                py = <double>i
                for j in range(j0, j1 + 1):
                    px = <double>j
                    # Edge functions first: w_k = e_k / area is >= 0 exactly when e_k is 0 or has
                    # the area's sign, so the divisions wait until the centre is known inside.
                    e0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
                    if (e0 < 0.0 and area > 0.0) or (e0 > 0.0 and area < 0.0):
                        continue
                    e1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
                    if (e1 < 0.0 and area > 0.0) or (e1 > 0.0 and area < 0.0):
                        continue
                    e2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
                    if (e2 < 0.0 and area > 0.0) or (e2 > 0.0 and area < 0.0):
                        continue
                    w0 = e0 / area
                    w1 = e1 / area
                    w2 = e2 / area
                    if w0 < 0.0 or w1 < 0.0 or w2 < 0.0:
                        continue
                    z = w0 * z0 + w1 * z1 + w2 * z2
                    if z > depth[i, j]:
                        depth[i, j] = z
                        tri_id[i, j] = f
                        bary[i, j, 0] = w0
                        bary[i, j, 1] = w1
                        bary[i, j, 2] = w2
    return tri_np, bary_np, depth_np


ctypedef fused real:
    float
    double


def interpolate_covered(const long long[:, :, ::1] tri_id, const real[:, :, :, ::1] bary,
                        const long long[:, ::1] triangles, const real[:, :, ::1] attributes):
    """Per-vertex attributes blended with the barycentrics at every covered pixel (zero elsewhere).

    Args:
        tri_id: (B, H, W) triangle per pixel, -1 on background.
        bary: (B, H, W, 3) barycentric weights.
        triangles: (F, 3) vertex indices.
        attributes: (B, V, C), the same floating type as ``bary``.

    Returns:
        (B, H, W, C) of that type: ``b0 * a[t0] + b1 * a[t1] + b2 * a[t2]`` summed in that order,
        as ``core.render.rasterize.interpolate`` computes it in torch.
    """
    cdef Py_ssize_t batch = tri_id.shape[0], height = tri_id.shape[1], width = tri_id.shape[2]
    cdef Py_ssize_t channels = attributes.shape[2]
    dtype = np.float32 if real is float else np.float64
    out_np = np.zeros((batch, height, width, channels), dtype=dtype)
    cdef real[:, :, :, ::1] out = out_np
    cdef Py_ssize_t b, i, j, c
    cdef long long t, k0, k1, k2
    cdef real w0, w1, w2, acc
    with nogil:
        for b in range(batch):
            for i in range(height):
                for j in range(width):
                    t = tri_id[b, i, j]
                    if t < 0:
                        continue
                    k0 = triangles[t, 0]
                    k1 = triangles[t, 1]
                    k2 = triangles[t, 2]
                    w0 = bary[b, i, j, 0]
                    w1 = bary[b, i, j, 1]
                    w2 = bary[b, i, j, 2]
                    for c in range(channels):
                        acc = attributes[b, k0, c] * w0
                        acc = acc + attributes[b, k1, c] * w1
                        acc = acc + attributes[b, k2, c] * w2
                        out[b, i, j, c] = acc
    return out_np


def shade_nearest_texels(const long long[:, ::1] tri_id, const real[:, :, ::1] bary,
                         const long long[:, ::1] triangles, const real[:, ::1] light,
                         const real[:, :, ::1] corner_uv, const real[:, ::1] texels,
                         int tex_height, int tex_width, real[:, :, :] window):
    """Nearest texel times interpolated shading, written into the covered pixels of ``window``.

    Args:
        tri_id: (H, W) triangle per pixel, -1 on background (left as it is in ``window``).
        bary: (H, W, 3) barycentric weights.
        triangles: (F, 3) vertex ids; light: (V, 3) per-vertex shading.
        corner_uv: (F, 3, 2) texture coordinates of each triangle's corners, v up.
        texels: (tex_height * tex_width, 3) the texture row by row.
        window: (3, H, W) written in place: ``clamp(texel * shade, 0, 1)``.

    The texel of ``(u, v)`` is column ``int(u * W)``, row ``int((1 - v) * H)`` (truncated,
    clamped to the texture), as ``core.render.textured.shade_texels`` computes it in torch.
    """
    cdef Py_ssize_t height = tri_id.shape[0], width = tri_id.shape[1], i, j, c
    cdef long long t, k0, k1, k2, row, col, texel
    cdef real w0, w1, w2, u, v, shade, value
    with nogil:
        for i in range(height):
            for j in range(width):
                t = tri_id[i, j]
                if t < 0:
                    continue
                k0 = triangles[t, 0]
                k1 = triangles[t, 1]
                k2 = triangles[t, 2]
                w0 = bary[i, j, 0]
                w1 = bary[i, j, 1]
                w2 = bary[i, j, 2]
                u = w0 * corner_uv[t, 0, 0] + w1 * corner_uv[t, 1, 0] + w2 * corner_uv[t, 2, 0]
                v = w0 * corner_uv[t, 0, 1] + w1 * corner_uv[t, 1, 1] + w2 * corner_uv[t, 2, 1]
                col = <long long>(u * tex_width)
                row = <long long>((1 - v) * tex_height)
                col = min(max(col, 0), tex_width - 1)
                row = min(max(row, 0), tex_height - 1)
                texel = row * tex_width + col
                for c in range(3):
                    shade = w0 * light[k0, c] + w1 * light[k1, c] + w2 * light[k2, c]
                    value = texels[texel, c] * shade
                    window[c, i, j] = min(max(value, 0), 1)
