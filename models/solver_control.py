"""Learned solver behaviour: damping and residual-block weights per unrolled iteration.

A small MLP sees, at every iteration of every level, the log of each block's current cost (the
residual statistics the solver reports in `core.fitting.solver.IterationState`) and which iteration and
level it is, and returns a damping and one weight multiplier per block (`IterationControl`). Its
last layer starts at zero: untrained, it returns the base damping and weights.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch
from torch import Tensor, nn

from core.fitting.solver import IterationControl, IterationState

__all__ = ["SolverControlNet"]

_LOG_RANGE = 4.0  # multipliers stay within exp(+-4)


class SolverControlNet(nn.Module):
    """Per-iteration damping and block weights from residual statistics.

    Args:
        block_names: the blocks whose weights it sets (fixed order; absent blocks read cost 0).
        levels, iterations: unrolled structure (levels x iterations per level).
        base_damping: damping when the network outputs 0.
        hidden: hidden width.
    """

    def __init__(self, block_names: Sequence[str], levels: int, iterations: int,
                 base_damping: float = 1e-2, hidden: int = 64) -> None:
        super().__init__()
        self.block_names = list(block_names)
        self.levels, self.iterations = int(levels), int(iterations)
        n_in = len(self.block_names) + self.levels + self.iterations
        self.mlp = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, len(self.block_names) + 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self.base_damping = float(base_damping)

    def forward(self, costs: Dict[str, Tensor], level: int, iteration: int, batch: int) -> Dict[str, Tensor]:
        """Shape: costs name -> (B,) -> {"damping": (B,), "weights": name -> (B,)} multipliers."""
        ref = next(iter(costs.values())) if costs else torch.zeros(batch)
        cols = [torch.log1p(costs[n].detach().clamp(min=0)) if n in costs else torch.zeros_like(ref)
                for n in self.block_names]
        one_hot = torch.zeros(batch, self.levels + self.iterations, dtype=ref.dtype, device=ref.device)
        one_hot[:, min(level, self.levels - 1)] = 1.0
        one_hot[:, self.levels + min(iteration, self.iterations - 1)] = 1.0
        out = self.mlp(torch.cat([torch.stack(cols, -1).to(ref.dtype), one_hot], -1))
        out = _LOG_RANGE * torch.tanh(out / _LOG_RANGE)
        weights = {n: torch.exp(out[:, i]) for i, n in enumerate(self.block_names)}
        return {"damping": self.base_damping * torch.exp(out[:, -1]), "weights": weights}

    def controller(self, level: int, base_weights: Dict[str, Tensor]
                   ) -> Callable[[IterationState], IterationControl]:
        """A `core.fitting.solver.solve` control callback for one level: base weights x learned multipliers."""
        def control(state: IterationState) -> IterationControl:
            batch = state.damping.shape[0]
            out = self(state.block_costs, level, state.iteration, batch)
            weights = {n: base_weights[n] * out["weights"][n] if n in out["weights"] else base_weights[n]
                       for n in base_weights}
            return IterationControl(damping=out["damping"], weights=weights)
        return control
