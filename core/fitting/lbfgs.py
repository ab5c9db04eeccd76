"""L-BFGS with a strong-Wolfe line search on one flat parameter vector (the shading stage's optimiser).

The textbook method (Nocedal & Wright, Numerical Optimization, 2nd ed., algorithms 7.4, 3.5 and
3.6): the two-loop recursion over the last ``history`` steps gives the search direction, scaled by
``s.y / y.y`` of the newest pair; a line search with cubic interpolation finds a step meeting the
strong Wolfe conditions. Written here rather than taken from ``torch.optim.LBFGS`` because creating
any ``torch.optim`` optimiser imports ``torch._dynamo`` (0.9 s, a third of a whole rig build's
start-up), and because a flat vector with a ``(loss, gradient)`` function needs no parameter groups.

The method's own vector arithmetic (the recursion over up to ``history`` pairs, the line search's
trial points) is done in float64 NumPy: about 400 dot products and updates of short vectors per
iteration cost torch's per-call overhead ~1 ms, NumPy's a third of that; the objective still gets
and returns tensors in ``x0``'s dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["LbfgsResult", "minimize_lbfgs"]

#: ``x (n,) -> (loss, gradient (n,))``.
Objective = Callable[[Tensor], Tuple[float, Tensor]]
_Point = Tuple[float, float, float, np.ndarray]  # step, loss, slope along the direction, gradient (float64)

_C1, _C2 = 1e-4, 0.9  # sufficient decrease and curvature constants of the strong Wolfe conditions
_MAX_TRIALS = 25  # line-search evaluations per iteration at most


@dataclass
class LbfgsResult:
    """Where `minimize_lbfgs` stopped: ``x`` (n,), its ``loss``, the ``iterations`` and objective
    ``evaluations`` used, and the ``memory`` (steps, gradient changes: float64 arrays (n,)) it held at
    the end."""

    x: Tensor
    loss: float
    iterations: int
    evaluations: int
    memory: Tuple[List[np.ndarray], List[np.ndarray]] = field(default_factory=lambda: ([], []))


def _cubic_minimum(a: _Point, b: _Point, low: float, high: float) -> float:
    """Minimiser of the cubic through two points' values and slopes, clamped to [low, high] (the
    midpoint where the cubic has no real minimiser)."""
    (t1, f1, d1, _), (t2, f2, d2, _) = a, b
    if t1 == t2:
        return 0.5 * (low + high)
    theta = d1 + d2 - 3.0 * (f1 - f2) / (t1 - t2)
    square = theta * theta - d1 * d2
    if not square >= 0.0 or not math.isfinite(square):
        return 0.5 * (low + high)
    gamma = math.copysign(math.sqrt(square), t2 - t1)
    denominator = d2 - d1 + 2.0 * gamma
    if denominator == 0.0:
        return 0.5 * (low + high)
    t = t2 - (t2 - t1) * (d2 + gamma - theta) / denominator
    return min(max(t, low), high)


class _Counted:
    """The objective along a line, with its evaluations counted against a limit; it is handed tensors
    like ``like`` (dtype, device) and its gradients come back as float64 arrays."""

    def __init__(self, objective: Objective, limit: int, like: Tensor) -> None:
        self.objective, self.limit, self.used = objective, limit, 0
        self.dtype, self.device = like.dtype, like.device

    @property
    def spent(self) -> bool:
        return self.used >= self.limit

    def at(self, x: np.ndarray, direction: np.ndarray, t: float) -> _Point:
        self.used += 1
        f, g = self.objective(torch.from_numpy(x + t * direction).to(self.dtype).to(self.device))
        gradient = g.detach().cpu().numpy().astype(np.float64)
        return t, float(f), float(gradient @ direction), gradient


def _zoom(line: _Counted, x: np.ndarray, direction: np.ndarray, start: _Point, lo: _Point, hi: _Point,
          tolerance: float) -> _Point:
    """Algorithm 3.6: shrink the bracket [lo, hi] (lo the lower of the two, meeting sufficient
    decrease) until a step meets the strong Wolfe conditions; the best step found otherwise."""
    _, loss, slope0, _ = start
    scale = float(np.abs(direction).max())
    while not line.spent and abs(hi[0] - lo[0]) * scale > tolerance:
        left, right = min(lo[0], hi[0]), max(lo[0], hi[0])
        t = _cubic_minimum(lo, hi, left, right)
        margin = 0.1 * (right - left)
        if min(t - left, right - t) < margin:  # too near an end: keep clear of it
            t = left + margin if t - left < right - t else right - margin
        trial = line.at(x, direction, t)
        _, f, d, _ = trial
        if f > loss + _C1 * t * slope0 or f >= lo[1]:
            hi = trial
        else:
            if abs(d) <= -_C2 * slope0:
                return trial
            if d * (hi[0] - lo[0]) >= 0.0:
                hi = lo
            lo = trial
    return lo


def _line_search(line: _Counted, x: np.ndarray, start: _Point, direction: np.ndarray, step: float,
                 tolerance: float) -> _Point:
    """Algorithm 3.5: a step along ``direction`` meeting the strong Wolfe conditions, or the best one
    found before the evaluation budget ran out (step 0: none better than the start)."""
    _, loss, slope0, _ = start
    previous = start
    t = step
    for i in range(_MAX_TRIALS):
        trial = line.at(x, direction, t)
        _, f, d, _ = trial
        if f > loss + _C1 * t * slope0 or (i > 0 and f >= previous[1]):
            return _zoom(line, x, direction, start, previous, trial, tolerance)
        if abs(d) <= -_C2 * slope0:
            return trial
        if d >= 0.0:
            return _zoom(line, x, direction, start, trial, previous, tolerance)
        if line.spent:
            return trial
        t = _cubic_minimum(previous, trial, t + 0.01 * (t - previous[0]), 10.0 * t)  # extrapolate
        previous = trial
    return previous


def minimize_lbfgs(objective: Objective, x0: Tensor, *, max_iterations: int,
                   max_evaluations: Optional[int] = None, history: int = 100,
                   gradient_tolerance: float = 1e-7, change_tolerance: float = 1e-9,
                   memory: Optional[Tuple[List[np.ndarray], List[np.ndarray]]] = None) -> LbfgsResult:
    """Minimise ``objective`` from ``x0`` by L-BFGS with a strong-Wolfe line search.

    The first step is ``-g`` scaled to at most unit length in the 1-norm, later ones start at 1
    (the quasi-Newton step). Stops after ``max_iterations`` iterations or ``max_evaluations``
    evaluations (default 1.25 x the iterations), when the largest gradient entry falls below
    ``gradient_tolerance``, or when a step changes ``x`` (largest entry) or the loss by less than
    ``change_tolerance``. ``memory``: the curvature pairs of an earlier run on the same unknowns
    (its result's ``memory``) to start from, as if its iterations had come just before (the first
    step is then a quasi-Newton step of length 1); the given lists are not changed.

    Shape:
        x0 (n,) -> result.x (n,).

    Example:
        >>> target = torch.tensor([1.0, -2.0, 3.0])
        >>> def f(x):
        ...     r = torch.tensor([1.0, 10.0, 100.0]) ** 0.5 * (x - target)
        ...     return float(r @ r), 2 * torch.tensor([1.0, 10.0, 100.0]) * (x - target)
        >>> result = minimize_lbfgs(f, torch.zeros(3), max_iterations=50)
        >>> torch.allclose(result.x, target, atol=1e-4), result.iterations < 20
        (True, True)
    """
    limit = max_evaluations if max_evaluations is not None else max_iterations * 5 // 4
    line = _Counted(objective, max(1, limit), x0)
    x = x0.detach().cpu().numpy().astype(np.float64)
    start = line.at(x, np.zeros_like(x), 0.0)
    loss, grad = start[1], start[3]
    held = ([], []) if memory is None else memory
    steps: List[np.ndarray] = [np.asarray(v, np.float64) for v in held[0][-history:]]
    changes: List[np.ndarray] = [np.asarray(v, np.float64) for v in held[1][-history:]]
    rho = [1.0 / float(y @ s) for s, y in zip(steps, changes)]
    iterations = 0
    while iterations < max_iterations and not line.spent:
        if float(np.abs(grad).max()) <= gradient_tolerance:
            break
        direction = _two_loop(grad, steps, changes, rho)
        slope = float(grad @ direction)
        if not slope < 0.0:  # not a descent direction (lost curvature): restart from the gradient
            steps.clear()
            changes.clear()
            rho.clear()
            direction, slope = -grad, -float(grad @ grad)
        step = min(1.0, 1.0 / float(np.abs(grad).sum())) if not steps else 1.0
        t, new_loss, _, new_grad = _line_search(line, x, (0.0, loss, slope, grad), direction, step,
                                                change_tolerance)
        iterations += 1
        if t == 0.0:
            break
        s, y = t * direction, new_grad - grad
        curvature = float(y @ s)
        if curvature > 1e-10:
            if len(steps) == history:
                del steps[0], changes[0], rho[0]
            steps.append(s)
            changes.append(y)
            rho.append(1.0 / curvature)
        x = x + s
        change = abs(new_loss - loss)
        loss, grad = new_loss, new_grad
        if float(np.abs(s).max()) <= change_tolerance or change < change_tolerance:
            break
    return LbfgsResult(x=torch.from_numpy(x).to(x0.dtype).to(x0.device), loss=loss, iterations=iterations,
                       evaluations=line.used, memory=(steps, changes))


def _two_loop(grad: np.ndarray, steps: List[np.ndarray], changes: List[np.ndarray], rho: List[float]
              ) -> np.ndarray:
    """Algorithm 7.4: ``-H grad`` for the inverse-Hessian approximation of the stored pairs
    (``rho[i] = 1 / (changes[i] . steps[i])``)."""
    q = -grad
    if not steps:
        return q
    alpha = [0.0] * len(steps)
    for i in range(len(steps) - 1, -1, -1):
        alpha[i] = rho[i] * float(steps[i] @ q)
        q -= alpha[i] * changes[i]
    y, s = changes[-1], steps[-1]
    r = q * (float(s @ y) / float(y @ y))
    for i in range(len(steps)):
        beta = rho[i] * float(changes[i] @ r)
        r += (alpha[i] - beta) * steps[i]
    return r
