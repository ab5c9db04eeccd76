"""The photometric stage's colour term from the object-space points of an observed patch and each
image's rotation.

``sum_g,m,c w_gm rho(I_g(uv_gm)_c - a_mc s_gmc)``: the vertex normals of the current points
(`core.mesh.PatchNormals`), the images' colours at the projected vertices (`core.sampling.sample_points`),
SH shading, the albedo in closed form and the Geman-McClure cost (`core.fitting.shading_cost`).
The L-BFGS of `core.fitting.shading_refine` evaluates it about 100 times per rig, so on the CPU
the whole term and its gradient run in one compiled pass (``core.fitting._shading``, built with
the project); the composed torch functions are the reference, and the path taken without the
compiled module, on other devices, for float64 or where a gradient of the images is asked for.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from core.camera import camera_to_screen, rotate_points
from core.checks import check_shape
from core.cpus import free_cores
from core.fitting.shading_cost import shading_cost
from core.lighting import SH_FACTORS
from core.mesh import PatchNormals
from core.sampling import sample_points

__all__ = ["colour_term", "compiled_available", "compiled_applies", "compiled_colour_term", "active_triangles",
           "kernel_threads"]

_NORMAL_EPS = 1e-12  # torch.nn.functional.normalize's, as PatchNormals uses it


try:  # the compiled pass (setup.py builds it); else the torch functions
    from core.fitting import _shading as _SHADING
except ImportError:
    _SHADING = None


def compiled_available() -> bool:
    """Whether ``core.fitting._shading`` is built (``make setup`` / ``pip install -e .`` build it)."""
    return _SHADING is not None


_BASIS = torch.tensor(SH_FACTORS, dtype=torch.float64)


def kernel_threads() -> int:
    """Threads for the compiled pass: the cores nothing else is running on now, at most 4
    (`core.cpus.free_cores`). An image-parallel pass waits for its slowest thread, so a core busy
    with other work makes a second thread a loss (measured: the shading stage 2.1 -> 1.65 s on two
    idle cores, but 2.2 -> 4.0 s with one core busy)."""
    return free_cores(limit=4)


def compiled_applies(shape: Tensor, images: Tensor) -> bool:
    """Whether `colour_term` takes the compiled pass for these points and images (module docstring)."""
    return (_SHADING is not None and shape.device.type == "cpu" and shape.dtype == torch.float32
            and not images.requires_grad)


def active_triangles(patch: PatchNormals, weights: Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """Per image, the patch's triangles with a corner of nonzero weight in it (the others add only to
    normals that no term reads): ``(ptr (G + 1,), ids)``, image g's ascending in ``ids[ptr[g]:ptr[g + 1]]``.
    For a caller evaluating the compiled pass many times with the same weights (`compiled_colour_term`).

    Shape:
        weights (G, U) -> (G + 1,), (sum of the counts,) int64.
    """
    targets = patch.targets
    seen = (weights[:, targets.clamp(min=0)] > 0) & (targets >= 0)       # (G, T, 3)
    active = seen.any(2)
    ptr = torch.zeros(len(weights) + 1, dtype=torch.int64)
    ptr[1:] = active.sum(1).cumsum(0)
    return ptr.numpy(), torch.nonzero(active)[:, 1].contiguous().numpy()


def compiled_colour_term(shape: Tensor, rotation: Tensor, scale: Tensor, trans: Tensor, images: Tensor,
                         patch: PatchNormals, weights: Tensor, sh: Tensor, prior: Tensor, prior_weight: float,
                         sigma: float, threads: int, scratch: Optional[dict] = None,
                         active: Optional[Tuple[np.ndarray, np.ndarray]] = None
                         ) -> Tuple[float, Tensor, Tensor, Tensor, Tensor]:
    """`colour_term`'s compiled pass without autograd: (cost, d cost / d shape, rotation, scale,
    trans), for a caller that chains the gradient itself (`core.fitting.shading_refine`).
    Arguments and shapes as `colour_term`'s (``prior`` expanded to (U, 3)); ``active``: the images'
    triangles that count (`active_triangles` of these weights; None: every one). The same result
    either way, about a tenth sooner with them."""
    def c(t: Tensor) -> Tensor:
        return t.detach().to(torch.float32).contiguous()

    ptr, ids = (None, None) if active is None else active
    cost, *grads = _SHADING.colour_term(
        c(shape).numpy(), c(rotation).numpy(), c(scale).numpy(), c(trans).numpy(), c(images).numpy(),
        patch.triangles.numpy(), patch.targets.numpy(), c(weights).numpy(), c(sh).numpy(),
        c(prior).numpy(), _BASIS.numpy(), float(prior_weight), float(sigma), _NORMAL_EPS, threads,
        scratch, ptr, ids)
    d_shape, d_rotation, d_scale, d_trans = (torch.from_numpy(d).to(like.dtype)
                                             for d, like in zip(grads, (shape, rotation, scale, trans)))
    return float(cost), d_shape, d_rotation, d_scale, d_trans


class _CompiledColourTerm(torch.autograd.Function):
    """The kernel's cost, with the gradient it computed in the same pass handed back in ``backward``."""

    @staticmethod
    def forward(ctx, shape: Tensor, rotation: Tensor, scale: Tensor, trans: Tensor,  # type: ignore[override]
                images: Tensor, patch: PatchNormals, weights: Tensor, sh: Tensor, prior: Tensor,
                prior_weight: float, sigma: float, threads: int, scratch: Optional[dict]) -> Tensor:
        cost, *grads = compiled_colour_term(shape, rotation, scale, trans, images, patch, weights, sh, prior,
                                            prior_weight, sigma, threads, scratch)
        ctx.grads = tuple(grads)
        return shape.new_tensor(cost)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return (*(grad * g for g in ctx.grads), None, None, None, None, None, None, None, None, None)


def colour_term(shape: Tensor, rotation: Tensor, scale: Tensor, trans: Tensor, images: Tensor,
                patch: PatchNormals, weights: Tensor, sh: Tensor, prior: Tensor, prior_weight: float,
                sigma: float, compiled: Optional[bool] = None, threads: Optional[int] = None,
                scratch: Optional[dict] = None) -> Tensor:
    """The robust colour cost of the patch's vertices over all images; differentiable in the points,
    the rotations, the scales and the translations.

    Args:
        shape: object-space positions of ``patch.support`` (the patch's vertices first), mm.
        rotation: each image's rotation matrix: the camera-space points are ``R X``
            (`core.camera.rotate_points`).
        scale, trans: the weak-perspective projection ``(u, v) = (scale x + tu, tv - scale y)``,
            crop pixels.
        images: the crops, RGB in [0, 1] (held).
        patch: the observed vertices' normals (`core.mesh.PatchNormals`).
        weights: visibility x grazing weight per image and vertex (held).
        sh: per-image SH lighting (held). prior: albedo prior per vertex or one colour (held).
        prior_weight, sigma: as `core.fitting.shading_cost.shading_cost`.
        compiled: force the compiled pass (True) or the torch functions (False); None: the compiled
            pass where it applies (built, CPU, float32, no gradient of the images).
        threads: the compiled pass's OpenMP threads (None: `kernel_threads`); the result does not
            depend on it.
        scratch: a dict (empty at first) in which the compiled pass keeps its working arrays between
            the calls of one problem (as `ObservedPatch` does); never shared by calls that may run at
            the same time. None: allocated each call. The result does not depend on it.

    Shape:
        shape (G, N, 3) with N = len(patch.support); rotation (G, 3, 3); scale (G,); trans (G, 2);
        images (G, 3, H, W); weights (G, U) with U = len(patch.vertex_ids); sh (G, 9, 3);
        prior (U, 3) or (3,) -> ().
    """
    g, n_support, n_patch = shape.shape[0], len(patch.support), len(patch.vertex_ids)
    check_shape("shape", shape, (None, n_support, 3))
    check_shape("rotation", rotation, (g, 3, 3))
    check_shape("scale", scale, (g,))
    check_shape("trans", trans, (g, 2))
    check_shape("images", images, (g, 3, None, None))
    check_shape("weights", weights, (g, n_patch))
    prior = prior.to(shape.dtype).expand(n_patch, 3)
    if compiled is None:
        compiled = compiled_applies(shape, images)
    elif compiled and _SHADING is None:
        raise RuntimeError("colour_term: core.fitting._shading is not built (run `make setup`)")
    if compiled:
        threads = kernel_threads() if threads is None else int(threads)
        return _CompiledColourTerm.apply(shape, rotation, scale, trans, images, patch, weights, sh, prior,
                                         prior_weight, sigma, threads, scratch)
    points = rotate_points(shape, rotation)
    uv = camera_to_screen(points[:, :n_patch], scale, trans)[..., :2]
    return shading_cost(patch(points), sample_points(images, uv), weights, sh, prior, prior_weight, sigma)
