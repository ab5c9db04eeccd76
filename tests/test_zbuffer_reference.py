"""The z-buffer kernels against a slow, obviously correct per-pixel reference.

The reference reads the rasterizer's contract and nothing else: for every pixel centre (u = column,
v = row) and every triangle, in exact rational arithmetic, the triangle covers the centre when all
three barycentric weights are >= 0 (a centre on an edge or a corner is covered); a triangle of zero
area, with a non-finite corner, or (when culling) of positive signed area in (u, v) is never drawn;
the nearest cover (largest interpolated depth) wins, and of equal depths the lowest triangle index.
Both the compiled kernel and its NumPy twin must agree with it on the cases where a shared rule
would hide: shared edges, corners on pixel centres, equal depths, degenerate and culled triangles,
parts outside the image.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import List, Optional, Tuple

import numpy as np
import pytest
import torch

from core.render.rasterize import kernel_built, rasterize

BACKENDS = ["numpy"] + (["cython"] if kernel_built() else [])


def reference_zbuffer(vertices: np.ndarray, triangles: np.ndarray, height: int, width: int,
                      cull_backfaces: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tri_id (H, W), exact depth (H, W) as Fractions (None on background), and per pixel the
    smallest exact barycentric weight of the winner (how close the centre is to its edge)."""
    tri_id = np.full((height, width), -1, dtype=np.int64)
    depth: List[List[Optional[Fraction]]] = [[None] * width for _ in range(height)]
    margin = np.full((height, width), np.inf)
    corners = []
    for tri in triangles:
        pts = vertices[tri]
        if not np.isfinite(pts).all():
            corners.append(None)
            continue
        corners.append([[Fraction(float(c)) for c in p] for p in pts])
    for i in range(height):
        for j in range(width):
            px, py = Fraction(j), Fraction(i)
            for f, c in enumerate(corners):
                if c is None:
                    continue
                (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = c
                area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
                if area == 0 or (cull_backfaces and area > 0):
                    continue
                w0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) / area
                w1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) / area
                w2 = 1 - w0 - w1
                if min(w0, w1, w2) < 0:
                    continue
                z = w0 * z0 + w1 * z1 + w2 * z2
                if depth[i][j] is None or z > depth[i][j]:
                    depth[i][j], tri_id[i, j], margin[i, j] = z, f, float(min(w0, w1, w2))
    return tri_id, depth, margin


def _check(vertices: np.ndarray, triangles: np.ndarray, height: int, width: int, cull: bool,
           backend: str, tol: float = 0.0) -> None:
    """Kernel == reference on every pixel (``tol`` > 0 excuses only centres that lie within
    ``tol`` of an edge or of another cover's depth, where float64 rounding may decide)."""
    expected, exact_depth, margin = reference_zbuffer(vertices, triangles, height, width, cull)
    frags = rasterize(torch.from_numpy(vertices)[None], torch.from_numpy(triangles), height, width,
                      backend=backend, cull_backfaces=cull)
    got = frags.tri_id[0].numpy()
    differ = got != expected
    if tol > 0:
        differ &= margin > tol
    assert not differ.any(), (f"{backend}: {int(differ.sum())} pixels differ, e.g. at "
                              f"{np.argwhere(differ)[:3].tolist()}: got {got[differ][:3]}, "
                              f"expected {expected[differ][:3]}")
    depth = frags.depth[0].numpy()
    covered = expected >= 0
    if covered.any():
        want = np.array([[float(d) if d is not None else -math.inf for d in row] for row in exact_depth])
        np.testing.assert_allclose(depth[covered & ~differ], want[covered & ~differ], rtol=0, atol=1e-9)
    assert np.all(np.isneginf(depth[~covered & ~differ]))


def _square_split(offset: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """A square whose diagonal runs through pixel centres, split into two triangles (both
    camera-facing, negative area in (u, v))."""
    v = np.array([[1, 1, 5], [7, 1, 5], [7, 7, 5], [1, 7, 5]], np.float64) + [offset, offset, 0]
    return v, np.array([[0, 3, 2], [0, 2, 1]], np.int64)


CASES = {
    # Pixel centres on the shared diagonal: both triangles cover them at the same depth; the
    # lower index wins. Corners and outer edges on pixel centres are covered.
    "shared edge, equal depth": (*_square_split(), 9, 9, False),
    # The same, shifted by half a pixel: no centre on any edge.
    "half-pixel shift": (*_square_split(0.5), 9, 9, False),
    # Two identical coplanar triangles: every covered pixel is an exact depth tie.
    "coplanar duplicate": (np.array([[0, 0, 2], [0, 6, 2], [6, 0, 2]], np.float64),
                           np.array([[0, 1, 2], [0, 1, 2]], np.int64), 8, 8, False),
    # Interpenetrating triangles: the nearer one changes along a line through pixel centres.
    "depth crossing": (np.array([[0, 0, 0], [0, 8, 8], [8, 0, 0], [0, 0, 8], [0, 8, 0], [8, 0, 8]],
                                np.float64),
                       np.array([[0, 1, 2], [3, 4, 5]], np.int64), 9, 9, False),
    # Zero area (collinear corners on pixel centres) and a non-finite corner: never drawn.
    "degenerate and non-finite": (np.array([[0, 0, 1], [3, 3, 1], [6, 6, 1], [1, 1, 9],
                                            [np.nan, 5, 9], [5, 1, 9]], np.float64),
                                  np.array([[0, 1, 2], [3, 4, 5]], np.int64), 8, 8, False),
    # Larger than the image on every side (corners at negative and beyond-edge coordinates).
    "beyond the image": (np.array([[-5.5, -3.0, 1.0], [-4.0, 20.0, 3.0], [15.0, -2.5, 2.0]], np.float64),
                         np.array([[0, 1, 2]], np.int64), 7, 6, False),
    # Both windings, culled and not.
    "winding, no culling": (np.array([[0, 0, 1], [0, 6, 1], [6, 0, 1], [1, 1, 2], [6, 1, 2], [1, 6, 2]],
                                     np.float64), np.array([[0, 1, 2], [3, 4, 5]], np.int64), 8, 8, False),
    "winding, culled": (np.array([[0, 0, 1], [0, 6, 1], [6, 0, 1], [1, 1, 2], [6, 1, 2], [1, 6, 2]],
                                 np.float64), np.array([[0, 1, 2], [3, 4, 5]], np.int64), 8, 8, True),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_matches_the_reference_on_edges_and_ties(case, backend):
    vertices, triangles, height, width, cull = CASES[case]
    _check(vertices, triangles, height, width, cull, backend)


def test_the_reference_itself_on_known_answers():
    """Hand-checked pixels of the shared-edge square: the diagonal belongs to triangle 0."""
    vertices, triangles, height, width, _ = CASES["shared edge, equal depth"]
    tri_id, depth, _ = reference_zbuffer(vertices, triangles, height, width, False)
    assert tri_id[4, 4] == 0 and tri_id[1, 1] == 0 and tri_id[7, 7] == 0  # on the diagonal (0-2)
    assert tri_id[2, 5] == 1 and tri_id[5, 2] == 0  # above / below it
    assert tri_id[0, 0] == -1 and tri_id[8, 8] == -1 and depth[4][4] == 5
    culled, _, _ = reference_zbuffer(*CASES["winding, culled"][:4], True)
    assert culled[1, 1] == 0 and culled[2, 3] == 0  # triangle 1 faces away: culled


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_matches_the_reference_on_random_soups(backend):
    """Random overlapping triangles; rounding may decide only within 1e-9 of an edge."""
    rng = np.random.default_rng(7)
    for _ in range(3):
        vertices = np.concatenate([rng.uniform(-2, 14, (18, 2)), rng.uniform(0, 5, (18, 1))], 1)
        vertices[::4, :2] = np.round(vertices[::4, :2])  # some corners on pixel centres
        triangles = rng.integers(0, 18, (10, 3))
        _check(vertices, triangles, 11, 12, False, backend, tol=1e-9)
