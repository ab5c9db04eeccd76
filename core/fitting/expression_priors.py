"""Priors that make blendshape weights behave like their names: quiet by default, exclusive where
the shapes exclude each other, the two sides alike unless the face says otherwise, ARKit couplings.

All are residual blocks on the ``expression`` variable (weights in [0, 1], ICT / ARKit names), with
closed-form Jacobians, for `core.fitting.solver.solve`:

- `sparsity_block`: the energy ``l1 * x + 0.5 * l2 * x^2`` per shape, written as the square
  ``0.5 * l2 * (x + l1 / l2)^2`` (equal up to a constant): with the weights bounded below by 0 its
  slope at 0 is ``l1``, so evidence smaller than that leaves a shape at exactly 0 (the L1 prior's
  dead zone) while the quadratic part keeps large weights from running away.
- `coupling_block`: exclusive pairs (jawLeft / jawRight, mouthLeft / mouthRight, smile / frown,
  ...) through ``c * min(x_a, x_b)``, which only ever pushes the smaller of the two to 0; and
  dependent shapes (ARKit's mouthClose acts on top of jawOpen and never exceeds it) through
  ``c * max(0, x_dependent - x_base)``.
- `symmetry_block`: ``x_L - x_R`` for each left/right pair, meant to run with a Huber threshold so
  that one-sided evidence (a wink, a smirk) pays only linearly.

`ExpressionPriors.for_names` builds the index lists from a model's names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from core.fitting.solver import ResidualBlock, Weight
from core.fitting.variables import EXPRESSION

__all__ = ["EXCLUSIVE_PAIRS", "DEPENDENT_PAIRS", "ExpressionPriors", "sparsity_block", "coupling_block",
           "symmetry_block"]

#: Shapes that do not act together (ARKit semantics; both present in ICT-FaceKit).
EXCLUSIVE_PAIRS: Tuple[Tuple[str, str], ...] = (
    ("jawLeft", "jawRight"), ("mouthLeft", "mouthRight"),
    ("mouthSmile_L", "mouthFrown_L"), ("mouthSmile_R", "mouthFrown_R"),
    ("browDown_L", "browOuterUp_L"), ("browDown_R", "browOuterUp_R"),
    ("browDown_L", "browInnerUp_L"), ("browDown_R", "browInnerUp_R"),
    ("eyeWide_L", "eyeBlink_L"), ("eyeWide_R", "eyeBlink_R"),
    ("eyeWide_L", "eyeSquint_L"), ("eyeWide_R", "eyeSquint_R"),
    ("mouthPucker", "mouthStretch_L"), ("mouthPucker", "mouthStretch_R"),
    ("mouthPucker", "mouthSmile_L"), ("mouthPucker", "mouthSmile_R"),
    ("mouthFunnel", "mouthSmile_L"), ("mouthFunnel", "mouthSmile_R"),
    ("mouthFunnel", "mouthPress_L"), ("mouthFunnel", "mouthPress_R"),
    ("cheekPuff_L", "mouthFunnel"), ("cheekPuff_R", "mouthFunnel"),
    ("mouthRollLower", "mouthShrugLower"), ("mouthRollUpper", "mouthShrugUpper"),
    ("eyeLookUp_L", "eyeLookDown_L"), ("eyeLookUp_R", "eyeLookDown_R"),
    ("eyeLookIn_L", "eyeLookOut_L"), ("eyeLookIn_R", "eyeLookOut_R"),
)
#: (dependent, base): the dependent shape never exceeds its base (ARKit: mouthClose on jawOpen).
DEPENDENT_PAIRS: Tuple[Tuple[str, str], ...] = (("mouthClose", "jawOpen"),)


def _mirror(name: str) -> Optional[str]:
    if name.endswith("_L"):
        return name[:-2] + "_R"
    if name.endswith("_R"):
        return name[:-2] + "_L"
    return None


@dataclass(frozen=True)
class ExpressionPriors:
    """Index lists of the priors for one list of expression names (unknown names are skipped).

    Attributes:
        exclusive: (E, 2) indices of exclusive pairs.
        dependent: (D, 2) indices (dependent, base).
        symmetric: (S, 2) indices (left, right) of every ``_L`` / ``_R`` pair.
        names: the expression names the indices refer to.
    """

    exclusive: Tensor
    dependent: Tensor
    symmetric: Tensor
    names: Tuple[str, ...]

    @classmethod
    def for_names(cls, names: Sequence[str], exclusive: Sequence[Tuple[str, str]] = EXCLUSIVE_PAIRS,
                  dependent: Sequence[Tuple[str, str]] = DEPENDENT_PAIRS) -> "ExpressionPriors":
        index = {n: i for i, n in enumerate(names)}

        def pairs(items: Sequence[Tuple[str, str]]) -> Tensor:
            found = [(index[a], index[b]) for a, b in items if a in index and b in index]
            return torch.tensor(found, dtype=torch.long).reshape(-1, 2)

        symmetric = [(a, _mirror(a)) for a in names if a.endswith("_L") and _mirror(a) in index]
        return cls(pairs(exclusive), pairs(dependent), pairs(symmetric), tuple(names))

    def indices(self, names: Sequence[str]) -> List[int]:
        """Positions of ``names`` (those present)."""
        index = {n: i for i, n in enumerate(self.names)}
        return [index[n] for n in names if n in index]


def sparsity_block(l1: Tensor, l2: Tensor, *, weight: Weight = 1.0, name: str = "expression_sparsity") -> ResidualBlock:
    """``sqrt(l2) * (x + l1 / l2)`` per shape: energy ``l1 x + 0.5 l2 x^2`` + const (module docstring).

    Shape: l1, l2 (K,) non-negative / positive; residual (B, K).
    """
    if bool((l2 <= 0).any()) or bool((l1 < 0).any()):
        raise ValueError("sparsity_block: expected l1 >= 0 and l2 > 0")
    root = l2.sqrt()
    shift = l1 / l2

    def residual(params: Mapping[str, Tensor]) -> Tensor:
        x = params[EXPRESSION]
        return root.to(x.dtype) * (x + shift.to(x.dtype))

    def linearize(params: Mapping[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        x = params[EXPRESSION]
        return residual(params), {EXPRESSION: torch.diag_embed(root.to(x.dtype).expand_as(x))}

    return ResidualBlock(name=name, residual=residual, weight=weight, linearize=linearize, depends_on=(EXPRESSION,))


def coupling_block(priors: ExpressionPriors, exclusive_weight: float, dependent_weight: float, *,
                   weight: Weight = 1.0, name: str = "expression_coupling") -> ResidualBlock:
    """Exclusive pairs ``c_e * min(x_a, x_b)`` and dependent pairs ``c_d * max(0, x_dep - x_base)``.

    Shape: residual (B, E + D).
    """
    ex, dep = priors.exclusive, priors.dependent
    ce, cd = float(exclusive_weight) ** 0.5, float(dependent_weight) ** 0.5

    def parts(x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        a, b = x[:, ex[:, 0]], x[:, ex[:, 1]]
        first = a <= b  # the smaller one carries the residual
        gap = x[:, dep[:, 0]] - x[:, dep[:, 1]]
        return torch.where(first, a, b), first, gap.clamp_min(0), gap > 0

    def residual(params: Mapping[str, Tensor]) -> Tensor:
        low, _, excess, _ = parts(params[EXPRESSION])
        return torch.cat([ce * low, cd * excess], 1)

    def linearize(params: Mapping[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        x = params[EXPRESSION]
        low, first, excess, active = parts(x)
        B, K = x.shape
        E, D = len(ex), len(dep)
        J = torch.zeros(B, E + D, K, dtype=x.dtype)
        rows = torch.arange(E)
        J[:, rows, ex[:, 0]] = ce * first.to(x.dtype)
        J[:, rows, ex[:, 1]] = ce * (~first).to(x.dtype)
        rows = torch.arange(E, E + D)
        J[:, rows, dep[:, 0]] = cd * active.to(x.dtype)
        J[:, rows, dep[:, 1]] = -cd * active.to(x.dtype)
        return torch.cat([ce * low, cd * excess], 1), {EXPRESSION: J}

    return ResidualBlock(name=name, residual=residual, weight=weight, linearize=linearize, depends_on=(EXPRESSION,))


def symmetry_block(priors: ExpressionPriors, pair_weights: Tensor, *, huber: Optional[float] = None,
                   weight: Weight = 1.0, name: str = "expression_symmetry") -> ResidualBlock:
    """``sqrt(w_s) * (x_L - x_R)`` for each left/right pair (Huber threshold ``huber``).

    Shape: pair_weights (S,); residual (B, S).
    """
    sym = priors.symmetric
    root = pair_weights.clamp_min(0).sqrt()

    def residual(params: Mapping[str, Tensor]) -> Tensor:
        x = params[EXPRESSION]
        return root.to(x.dtype) * (x[:, sym[:, 0]] - x[:, sym[:, 1]])

    def linearize(params: Mapping[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        x = params[EXPRESSION]
        B, K = x.shape
        S = len(sym)
        J = torch.zeros(B, S, K, dtype=x.dtype)
        rows = torch.arange(S)
        J[:, rows, sym[:, 0]] = root.to(x.dtype)
        J[:, rows, sym[:, 1]] = -root.to(x.dtype)
        return residual(params), {EXPRESSION: J}

    return ResidualBlock(name=name, residual=residual, weight=weight, linearize=linearize,
                         depends_on=(EXPRESSION,), huber=huber)
