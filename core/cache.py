"""The last few results of a computation, found again by the values of its inputs.

Several steps redo the same work on the same model-level inputs within a run: the normal operators
of a mesh's triangles, an atlas' texel map and fill indices, a template's side of deformation
transfer. Their inputs are often new tensors holding the same values (a rig's head triangles are
made anew each time they are asked for), so a cache keyed by identity would miss: `RecentResults`
compares values (`core.checks.same_tensor` for tensors, ``np.array_equal`` with shape and dtype
for arrays, ``==`` otherwise) and keeps its own copies of the keys.

Example:
    >>> recent = RecentResults(2)
    >>> key = (torch.tensor([1, 2, 3]), 4)
    >>> recent.get(key) is None
    True
    >>> recent.put(key, "built")
    'built'
    >>> recent.get((torch.tensor([1, 2, 3]), 4))
    'built'
"""
from __future__ import annotations

from typing import Any, Generic, List, Optional, Tuple, TypeVar

import numpy as np
import torch

from core.checks import same_tensor

__all__ = ["RecentResults"]

V = TypeVar("V")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and same_tensor(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and a.dtype == b.dtype and np.array_equal(a, b))
    return a == b


def _kept(x: Any) -> Any:
    """A copy of a key part that later changes to the caller's tensor or array cannot reach."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, np.ndarray):
        return x.copy()
    return x


class RecentResults(Generic[V]):
    """The results of the last ``size`` distinct keys (tuples of tensors, arrays and plain values),
    newest first."""

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self._entries: List[Tuple[tuple, V]] = []

    def get(self, key: tuple) -> Optional[V]:
        """The result kept for a key with these values, or None."""
        for kept, value in self._entries:
            if len(kept) == len(key) and all(_same(a, b) for a, b in zip(kept, key)):
                return value
        return None

    def put(self, key: tuple, value: V) -> V:
        """Keep ``value`` for ``key`` (the oldest dropped beyond ``size``); returns ``value``."""
        self._entries.insert(0, (tuple(_kept(x) for x in key), value))
        del self._entries[self.size:]
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
