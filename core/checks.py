"""Argument checks at public boundaries: shapes, batch sizes, triangle indices.

Each raises ValueError naming the argument, the expected and the actual value (kornia style).
"""
from __future__ import annotations

import torch


def check_shape(name: str, x: torch.Tensor, shape: tuple[int | None, ...]) -> None:
    """Raise ValueError unless ``x`` has ``len(shape)`` dims matching ``shape`` (None = any)."""
    ok = isinstance(x, torch.Tensor) and x.dim() == len(shape)
    ok = ok and all(s is None or s == d for s, d in zip(shape, x.shape))
    if not ok:
        expected = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        actual = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected shape {expected}, got {actual}")


def check_batch(batch: int, **tensors: torch.Tensor) -> None:
    """Raise ValueError unless every tensor has leading dimension ``batch``."""
    for name, x in tensors.items():
        if x.shape[0] != batch:
            raise ValueError(f"{name}: expected batch size {batch}, got {x.shape[0]}")


def check_triangles(triangles: torch.Tensor, n_vertices: int) -> None:
    """Raise ValueError unless ``triangles`` is (F, 3) integer indices into ``n_vertices``."""
    check_shape("triangles", triangles, (None, 3))
    if triangles.dtype.is_floating_point or triangles.dtype == torch.bool:
        raise ValueError(f"triangles: expected an integer tensor, got {triangles.dtype}")
    if not triangles.numel():
        return
    if triangles.device.type == "cpu":  # NumPy: single-threaded, immune to a busy second core
        flat = triangles.detach().numpy()
        low, high = int(flat.min()), int(flat.max())
    else:
        low, high = (int(x) for x in torch.aminmax(triangles))
    if low < 0 or high >= n_vertices:
        raise ValueError(f"triangles: indices must lie in [0, {n_vertices}), got [{low}, {high}]")


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors hold the same values with the same shape, dtype and device (a cache's
    match: equal values in another dtype or on another device are not the same input)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)

