"""Batched damped Gauss-Newton / Levenberg-Marquardt over stacked, weighted residual blocks.

The energy of one batch element is ``E = 0.5 * sum_k w_k * sum_i rho_k(r_ki^2)`` over residual
blocks ``k`` (``rho`` is the identity, or Huber through iteratively reweighted least squares).
Unknowns are a dict of named tensors, batch first. Every batch element is an independent problem;
within one, variables are either

- *global*: shape ``(B, ...)``, e.g. the identity code of a person, or every unknown of a
  single-image fit, or
- *per-group*: shape ``(B, G, ...)``, listed in ``solve(..., per_group=...)``, e.g. the pose and
  expression of each of the ``G`` images of that person.

A block is either global (residuals ``(B, M)``, depending on global variables only) or per-group
(residuals ``(B, G, M)``, row group ``g`` depending on the global variables and on the slice ``g``
of the per-group ones). The normal equations then have an arrow structure, which is solved by a
Schur complement over the per-group blocks: cost linear in ``G``, and automatic Jacobians need one
forward pass per *per-image* unknown rather than one per unknown of all images.

Jacobians come from a block's closed form where it supplies one (``linearize``) and from
``torch.func`` (forward mode ``jvp`` vmapped over basis tangents; reverse mode for global blocks
with fewer residuals than unknowns) for the rest. The damped normal equations
``(J^T W J + lambda D) dx = -J^T W r`` are solved by Cholesky; a matrix that is not positive
definite gets growing diagonal jitter and, at worst, a scaled gradient step, so a step is always
finite. Box constraints use projection with an active set (variables at a bound whose gradient
pushes outwards are held). Damping is adapted per batch element by accepting or rejecting its step.

Modes: ``mode="tolerance"`` stops each element on relative cost decrease, step size or repeated
rejections (standalone fitting); ``mode="fixed"`` runs exactly ``max_iterations``. With
``differentiable=True`` nothing is detached and no tensor is modified in place, so the unrolled
iterations can be back-propagated (e.g. to train a network that predicts damping and block weights
per iteration through ``control``).
"""
from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

from core.robust import huber

__all__ = [
    "ResidualBlock", "SolverConfig", "IterationState", "IterationControl", "SolveResult", "solve",
    "evaluate_cost", "block_jacobian", "batched_jacfwd", "robust_cholesky", "solve_spd",
]

logger = logging.getLogger(__name__)

Params = Mapping[str, Tensor]
Weight = Union[float, Tensor]
LinearizeFn = Callable[[Params], Tuple[Tensor, Mapping[str, Tensor]]]


@dataclass
class ResidualBlock:
    """One weighted, switchable group of residuals.

    Attributes:
        name: unique name; keys of weights, costs and ``IterationControl.weights``.
        residual: ``params -> r`` with ``r`` of shape (B, M), or (B, G, M) when ``per_group``.
            Must be batch-independent (element b's residuals depend on element b's unknowns) and
            free of in-place updates of its inputs; ``params`` holds free and fixed variables.
        weight: w_k, a float, a (B,) tensor, or (B, G) for a per-group block.
        enabled: switched-off blocks are skipped entirely.
        linearize: optional closed form ``params -> (r, {name: J})`` with ``J`` of shape
            (B, M, *var_shape) / (B, G, M, *var_shape) (``var_shape`` = the variable's shape after
            its batch, or batch and group, axes). Variables it leaves out but the block depends on
            are differentiated automatically; entries for fixed variables are ignored.
        depends_on: names of the variables the residuals depend on (None = all). Global blocks
            must name them when per-group variables are free.
        per_group: residuals have a group axis (see module docstring).
        huber: Huber threshold in residual units (None = plain least squares).
    """

    name: str
    residual: Callable[[Params], Tensor]
    weight: Weight = 1.0
    enabled: bool = True
    linearize: Optional[LinearizeFn] = None
    depends_on: Optional[Tuple[str, ...]] = None
    per_group: bool = False
    huber: Optional[float] = None


@dataclass(frozen=True)
class SolverConfig:
    """Settings of `solve`.

    Attributes:
        max_iterations: iterations (``mode="fixed"``) or at most that many (``"tolerance"``).
        mode: ``"tolerance"`` stops elements that converged; ``"fixed"`` always runs all.
        damping: initial lambda.
        damping_mode: ``"marquardt"`` (D = diag(J^T W J), scale invariant) or ``"levenberg"``
            (D = I).
        adaptive: accept a step only where it lowers the cost and adapt lambda per element
            (x ``damping_decrease`` on success, x ``damping_increase`` on failure); False = plain
            damped Gauss-Newton, every step taken (smooth when unrolled).
        ftol: stop when an accepted step lowers the cost by less than ``ftol * cost``.
        xtol: stop when ``|dx| <= xtol * (xtol + |x|)``.
        max_rejections: stop after that many consecutive rejected steps.
        differentiable: keep the autograd graph through all iterations.
        jacobian: ``"auto"`` (forward mode, reverse for global blocks with fewer residuals than
            unknowns), ``"forward"`` or ``"reverse"`` (reverse only applies to global blocks).
    """

    max_iterations: int = 50
    mode: Literal["tolerance", "fixed"] = "tolerance"
    damping: float = 1e-3
    damping_mode: Literal["marquardt", "levenberg"] = "marquardt"
    adaptive: bool = True
    damping_decrease: float = 1.0 / 3.0
    damping_increase: float = 4.0
    min_damping: float = 1e-12
    max_damping: float = 1e10
    ftol: float = 1e-7
    xtol: float = 1e-8
    max_rejections: int = 6
    differentiable: bool = False
    jacobian: Literal["auto", "forward", "reverse"] = "auto"

    def __post_init__(self) -> None:
        if self.mode not in ("tolerance", "fixed"):
            raise ValueError(f"SolverConfig.mode: expected 'tolerance' or 'fixed', got {self.mode!r}")
        if self.damping_mode not in ("marquardt", "levenberg"):
            raise ValueError("SolverConfig.damping_mode: expected 'marquardt' or 'levenberg', "
                             f"got {self.damping_mode!r}")
        if self.jacobian not in ("auto", "forward", "reverse"):
            raise ValueError("SolverConfig.jacobian: expected 'auto', 'forward' or 'reverse', "
                             f"got {self.jacobian!r}")
        if self.max_iterations < 0:
            raise ValueError(f"SolverConfig.max_iterations: expected >= 0, got {self.max_iterations}")
        if self.damping < 0:
            raise ValueError(f"SolverConfig.damping: expected >= 0, got {self.damping}")


@dataclass
class IterationState:
    """What a `control` callback sees at the start of an iteration.

    Attributes:
        iteration: 0-based index.
        params: current variables (free and fixed).
        block_costs: name -> (B,) unweighted cost ``0.5 * sum rho(r^2)`` of each enabled block
            (summed over groups) at ``params``: residual statistics for a predictor.
        damping: (B,) the damping the solver would use.
    """

    iteration: int
    params: Dict[str, Tensor]
    block_costs: Dict[str, Tensor]
    damping: Tensor


@dataclass
class IterationControl:
    """Per-iteration overrides returned by `control`: damping (float or (B,)) and block weights."""

    damping: Optional[Weight] = None
    weights: Optional[Mapping[str, Weight]] = None


@dataclass
class SolveResult:
    """Output of `solve`.

    Attributes:
        params: all variables (free ones at the solution, fixed ones unchanged).
        cost: (B,) final weighted cost.
        history: (B, T + 1) cost before the first and after every iteration that ran.
        block_costs: name -> (B,) unweighted final cost per enabled block.
        iterations: (B,) iterations each element ran.
        converged: (B,) bool, met a stopping criterion (always False in fixed mode).
        damping: (B,) final damping (to continue with a later `solve`).
    """

    params: Dict[str, Tensor]
    cost: Tensor
    history: Tensor
    block_costs: Dict[str, Tensor]
    iterations: Tensor
    converged: Tensor
    damping: Tensor


# --------------------------------------------------------------------------- linear algebra
def robust_cholesky(A: Tensor, jitters: Sequence[float] = (1e-9, 1e-6, 1e-3, 1e-1, 1.0)
                    ) -> Tuple[Tensor, Tensor]:
    """Cholesky factors of symmetric matrices, made positive definite where they are not.

    Matrices whose factorization fails get ``tau * mean(|diag|)`` added to the diagonal for
    growing ``tau``; non-finite matrices and those still failing are replaced by
    ``mean(|diag|) * I`` (a scaled gradient step when used in a solve). Elements that factor at
    once are unchanged. Differentiable (only the final factorization is on the graph).

    Returns:
        (L, failed): lower-triangular factors, and which matrices needed a repair.

    Shape:
        - A: (*, n, n)
        - L: (*, n, n); failed: (*)
    """
    if A.dim() < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"A: expected square matrices (*, n, n), got {tuple(A.shape)}")
    L, info = torch.linalg.cholesky_ex(A)
    failed = (info != 0) | ~torch.isfinite(L.diagonal(dim1=-2, dim2=-1)).all(-1)
    if not bool(failed.any()):
        return L, failed
    n = A.shape[-1]
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    finite = torch.isfinite(A).flatten(-2).all(-1)
    scale = A.detach().diagonal(dim1=-2, dim2=-1).abs().mean(-1)
    scale = torch.where(finite & (scale > 0), scale, torch.ones_like(scale))
    A = torch.where(finite[..., None, None], A, scale[..., None, None] * eye)
    repaired = failed.clone()
    for tau in jitters:
        jitter = torch.where(failed, tau * scale, torch.zeros_like(scale))
        L, info = torch.linalg.cholesky_ex(A + jitter[..., None, None] * eye)
        if not bool((info != 0).any()):
            logger.debug("Cholesky repaired with jitter %g on %d matrices", tau, int(failed.sum()))
            return L, repaired
        failed = failed & (info != 0)
    A = torch.where(failed[..., None, None], scale[..., None, None] * eye, A)
    L, _ = torch.linalg.cholesky_ex(A)
    logger.debug("Cholesky failed on %d matrices: scaled gradient steps", int(failed.sum()))
    return L, repaired


def solve_spd(A: Tensor, b: Tensor) -> Tensor:
    """Solve ``A x = b`` for symmetric positive (semi-)definite ``A`` via `robust_cholesky`.

    Always returns finite values for finite ``b``; non-finite entries of ``b`` are zeroed.

    Shape:
        - A: (*, n, n)
        - b: (*, n)
        - output: (*, n)
    """
    if b.shape != A.shape[:-1]:
        raise ValueError(f"b: expected shape {tuple(A.shape[:-1])}, got {tuple(b.shape)}")
    L, _ = robust_cholesky(A)
    b = torch.where(torch.isfinite(b), b, torch.zeros_like(b))
    return torch.cholesky_solve(b.unsqueeze(-1), L).squeeze(-1)


# --------------------------------------------------------------------------- variable layout
@dataclass
class _Var:
    name: str
    per_group: bool
    shape: Tuple[int, ...]  # after the batch (and group) axes
    size: int
    offset: int  # into the global or the per-group vector


class _Layout:
    """Packs free variables into a global vector (B, S) and a per-group one (B, G, L)."""

    def __init__(self, params: Params, free: Sequence[str], per_group: Sequence[str]) -> None:
        if not free:
            raise ValueError("free: expected at least one variable to optimize")
        for n in list(free) + list(per_group):
            if n not in params:
                raise ValueError(f"free/per_group: variable {n!r} is not in params "
                                 f"(known: {sorted(params)})")
            if not isinstance(params[n], Tensor) or not params[n].is_floating_point():
                raise ValueError(f"params[{n!r}]: expected a floating-point tensor")
        first = params[free[0]]
        self.batch = first.shape[0] if first.dim() > 0 else 0
        self.dtype, self.device = first.dtype, first.device
        groups = {params[n].shape[1] for n in per_group if params[n].dim() >= 2}
        if any(params[n].dim() < 2 for n in per_group):
            raise ValueError("per_group: variables need shape (B, G, ...), got "
                             + ", ".join(f"{n} {tuple(params[n].shape)}" for n in per_group))
        if len(groups) > 1:
            raise ValueError(f"per_group: variables disagree on the group count G: {sorted(groups)}")
        self.groups = groups.pop() if groups else 0
        self.vars: Dict[str, _Var] = {}
        offsets = {False: 0, True: 0}
        for n in free:
            x = params[n]
            grouped = n in per_group
            if x.dim() < 1 or x.shape[0] != self.batch:
                raise ValueError(f"params[{n!r}]: expected batch size {self.batch} first, "
                                 f"got shape {tuple(x.shape)}")
            if x.dtype != self.dtype or x.device != self.device:
                raise ValueError(f"params[{n!r}]: expected dtype {self.dtype} on {self.device}, "
                                 f"got {x.dtype} on {x.device}")
            shape = tuple(x.shape[2:] if grouped else x.shape[1:])
            size = 1
            for s in shape:
                size *= s
            self.vars[n] = _Var(n, grouped, shape, size, offsets[grouped])
            offsets[grouped] += size
        self.n_global, self.n_group = offsets[False], offsets[True]

    def lead(self, grouped: bool) -> Tuple[int, ...]:
        return (self.batch, self.groups) if grouped else (self.batch,)

    def pack(self, params: Params) -> Tuple[Tensor, Tensor]:
        parts = {False: [], True: []}
        for v in self.vars.values():
            parts[v.per_group].append(params[v.name].reshape(*self.lead(v.per_group), v.size))
        xs = torch.cat(parts[False], -1) if parts[False] else self._zeros(False)
        xl = torch.cat(parts[True], -1) if parts[True] else self._zeros(True)
        return xs, xl

    def unpack(self, xs: Tensor, xl: Tensor, params: Params) -> Dict[str, Tensor]:
        out = dict(params)
        for v in self.vars.values():
            x = xl if v.per_group else xs
            piece = x[..., v.offset:v.offset + v.size]
            out[v.name] = piece.reshape(*self.lead(v.per_group), *v.shape)
        return out

    def _zeros(self, grouped: bool) -> Tensor:
        return torch.zeros(*self.lead(grouped), 0, dtype=self.dtype, device=self.device)

    def bounds(self, bounds: Optional[Mapping[str, Tuple[Weight, Weight]]]
               ) -> Optional[Tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Packed (lo_s, hi_s, lo_l, hi_l), or None without bounds on free variables."""
        bounds = {n: b for n, b in (bounds or {}).items() if n in self.vars}
        if not bounds:
            return None
        packed = []
        for side in (0, 1):
            full = {}
            for v in self.vars.values():
                fill = float("-inf") if side == 0 else float("inf")
                shape = (*self.lead(v.per_group), *v.shape)
                value = bounds[v.name][side] if v.name in bounds else fill
                value = torch.as_tensor(value, dtype=self.dtype, device=self.device)
                try:
                    full[v.name] = value.expand(shape)
                except RuntimeError as err:
                    raise ValueError(f"bounds[{v.name!r}]: cannot broadcast {tuple(value.shape)} "
                                     f"to the variable's shape {shape}") from err
            packed.extend(self.pack(full))
        lo_s, lo_l, hi_s, hi_l = packed
        if bool((lo_s > hi_s).any()) or bool((lo_l > hi_l).any()):
            raise ValueError("bounds: a lower bound exceeds its upper bound")
        return lo_s, hi_s, lo_l, hi_l


def _block_weight(block: ResidualBlock, weight: Weight, layout: _Layout) -> Tensor:
    """Weight as a tensor broadcastable to the block's per-element (or per-group) costs."""
    w = torch.as_tensor(weight, dtype=layout.dtype, device=layout.device)
    allowed = [(), (layout.batch,)] + ([(layout.batch, layout.groups)] if block.per_group else [])
    if tuple(w.shape) not in allowed:
        raise ValueError(f"weight of block {block.name!r}: expected a scalar or shape "
                         f"{' or '.join(str(a) for a in allowed[1:])}, got {tuple(w.shape)}")
    if block.per_group and w.dim() == 1:
        w = w[:, None]
    return w


def _check_residual(block: ResidualBlock, r: Tensor, layout: _Layout) -> Tensor:
    lead = layout.lead(block.per_group)
    if not isinstance(r, Tensor) or r.dim() != len(lead) + 1 or tuple(r.shape[:-1]) != lead:
        got = tuple(r.shape) if isinstance(r, Tensor) else type(r).__name__
        raise ValueError(f"residual of block {block.name!r}: expected shape "
                         f"({', '.join(map(str, lead))}, M), got {got}")
    return r


def _dependencies(block: ResidualBlock, layout: _Layout) -> List[str]:
    """Free variables the block depends on, checked against the arrow structure."""
    if block.depends_on is None:
        if not block.per_group and any(v.per_group for v in layout.vars.values()):
            raise ValueError(f"block {block.name!r}: a global block must list depends_on when "
                             "per-group variables are free")
        return list(layout.vars)
    deps = [n for n in layout.vars if n in block.depends_on]
    if not block.per_group:
        grouped = [n for n in deps if layout.vars[n].per_group]
        if grouped:
            raise ValueError(f"block {block.name!r}: a global block cannot depend on per-group "
                             f"variables {grouped}; make it per_group")
    return deps


@functools.lru_cache(maxsize=1)
def _forward_mode_ready() -> None:
    """Run one tiny ``jvp`` with torch's FutureWarning about ``torch.jit.script`` silenced: the
    first forward-mode call makes torch script its own jvp decompositions, which warns (a torch
    internal, nothing the caller can change) on every run of the demo."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        jvp(torch.sin, (torch.zeros(1),), (torch.ones(1),))


def batched_jacfwd(f: Callable[..., Tensor], primals: Sequence[Tensor], lead_dims: Sequence[int]
                   ) -> List[Tensor]:
    """Forward-mode Jacobians of a function that treats leading axes as independent elements.

    ``primals[k]`` has ``lead_dims[k]`` leading axes whose elements ``f`` processes
    independently (a batch, or a batch and points); the Jacobian w.r.t. its remaining
    (per-element) entries is found with one ``jvp`` per entry, the tangent broadcast over the
    leading axes, all vmapped together.

    Returns:
        One Jacobian per primal, shape ``(*f_out_shape, size_k)`` with ``size_k`` the number of
        per-element entries of ``primals[k]``.
    """
    _forward_mode_ready()
    sizes = []
    for p, d in zip(primals, lead_dims):
        size = 1
        for s in p.shape[d:]:
            size *= s
        sizes.append(size)
    total = sum(sizes)
    ref = primals[0]
    tangents, offset = [], 0
    for p, d, size in zip(primals, lead_dims, sizes):
        basis = torch.zeros(total, size, dtype=ref.dtype, device=ref.device)
        basis[offset:offset + size] = torch.eye(size, dtype=ref.dtype, device=ref.device)
        tangents.append(basis.reshape(total, *([1] * d), *p.shape[d:]).expand(total, *p.shape))
        offset += size
    jac = vmap(lambda *t: jvp(f, tuple(primals), tuple(t))[1])(*tangents).movedim(0, -1)
    return list(jac.split(sizes, dim=-1))


def _autodiff(block: ResidualBlock, params: Params, names: List[str], layout: _Layout,
              r: Tensor, method: str) -> Dict[str, Tensor]:
    """Jacobians (B, [G,] M, size) of the block w.r.t. ``names`` by torch.func."""
    primals = tuple(params[n] for n in names)

    def f(*values: Tensor) -> Tensor:
        p = dict(params)
        p.update(zip(names, values))
        return block.residual(p)

    sizes = [layout.vars[n].size for n in names]
    total, M = sum(sizes), r.shape[-1]
    use_reverse = not block.per_group and (method == "reverse" or (method == "auto" and M < total))
    out: Dict[str, Tensor] = {}
    if use_reverse:
        _, pullback = vjp(f, *primals)
        eye = torch.eye(M, dtype=r.dtype, device=r.device)
        cotangents = eye[:, None, :].expand(M, layout.batch, M)
        grads = vmap(pullback)(cotangents)  # per name: (M, B, *shape)
        for n, g in zip(names, grads):
            out[n] = g.reshape(M, layout.batch, -1).transpose(0, 1)
        return out
    leads = [len(layout.lead(layout.vars[n].per_group)) for n in names]
    return dict(zip(names, batched_jacfwd(f, primals, leads)))


def _linearize_block(block: ResidualBlock, params: Params, layout: _Layout, method: str
                     ) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Residuals and flattened Jacobians (B, [G,] M, size) w.r.t. the free variables used."""
    deps = _dependencies(block, layout)
    if block.linearize is not None:
        r, given = block.linearize(params)
    else:
        r, given = block.residual(params), {}
    r = _check_residual(block, r, layout)
    M = r.shape[-1]
    jac: Dict[str, Tensor] = {}
    for n in deps:
        if n not in given:
            continue
        v = layout.vars[n]
        expected = (*layout.lead(block.per_group), M, *v.shape)
        if tuple(given[n].shape) != expected:
            raise ValueError(f"linearize of block {block.name!r}: Jacobian for {n!r} expected "
                             f"shape {expected}, got {tuple(given[n].shape)}")
        jac[n] = given[n].reshape(*expected[:-len(v.shape) or None], v.size)
    missing = [n for n in deps if n not in jac]
    if missing:
        jac.update(_autodiff(block, params, missing, layout, r, method))
    return r, jac


def block_jacobian(block: ResidualBlock, params: Params, free: Optional[Sequence[str]] = None,
                   per_group: Sequence[str] = (), method: str = "auto"
                   ) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Residuals of one block and its Jacobians w.r.t. the free variables it depends on.

    Uses the block's closed form where given, torch.func elsewhere; for checking blocks against
    finite differences.

    Returns:
        (r, {name: J}) with ``J`` of shape (B, M, *var_shape) or (B, G, M, *var_shape).
    """
    layout = _Layout(params, list(free) if free is not None else list(params), per_group)
    r, jac = _linearize_block(block, params, layout, method)
    return r, {n: J.reshape(*J.shape[:-1], *layout.vars[n].shape) for n, J in jac.items()}


def _compact_columns(jac: Dict[str, Tensor], layout: _Layout, grouped: bool
                     ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """The block's Jacobian columns for the global (or per-group) variables it depends on,
    concatenated in packed order, and their packed column indices; (None, None) if none."""
    vs = [v for v in layout.vars.values() if v.per_group == grouped and v.name in jac]
    if not vs:
        return None, None
    index = torch.cat([torch.arange(v.offset, v.offset + v.size, device=layout.device) for v in vs])
    return torch.cat([jac[v.name] for v in vs], -1), index


def _add_block(H: Tensor, rows: Tensor, cols: Tensor, values: Tensor) -> Tensor:
    """``H[..., rows, cols] + values`` out of place (differentiable), for index vectors."""
    n_rows, n_cols = H.shape[-2], H.shape[-1]
    if len(rows) == n_rows and len(cols) == n_cols:  # packed order covers everything
        return H + values
    flat = (rows[:, None] * n_cols + cols[None, :]).reshape(-1)
    out = H.flatten(-2).index_add(-1, flat, values.flatten(-2))
    return out.reshape(H.shape)


@dataclass
class _Normal:
    """Normal equations in arrow form (absent parts are None)."""

    H_ss: Tensor  # (B, S, S)
    g_s: Tensor  # (B, S)
    H_sl: Optional[Tensor]  # (B, G, S, L)
    H_ll: Optional[Tensor]  # (B, G, L, L)
    g_l: Optional[Tensor]  # (B, G, L)
    cost: Tensor  # (B,)
    block_costs: Dict[str, Tensor] = field(default_factory=dict)


def _block_cost(block: ResidualBlock, r: Tensor) -> Tuple[Tensor, Tensor]:
    rho, irls = huber(r, block.huber)
    return 0.5 * rho.sum(-1), irls


def _total(costs: Dict[str, Tensor], weights: Dict[str, Tensor], batch: int, ref: Tensor
           ) -> Tuple[Tensor, Dict[str, Tensor]]:
    total = torch.zeros(batch, dtype=ref.dtype, device=ref.device)
    summary = {}
    for name, c in costs.items():
        wc = weights[name] * c
        total = total + (wc.sum(-1) if c.dim() == 2 else wc)
        summary[name] = c.sum(-1) if c.dim() == 2 else c
    return total, summary


def _evaluate(blocks: Sequence[ResidualBlock], params: Params, layout: _Layout,
              weights: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
    costs = {}
    for block in blocks:
        r = _check_residual(block, block.residual(params), layout)
        costs[block.name] = _block_cost(block, r)[0]
    return _total(costs, weights, layout.batch, layout.pack(params)[0])


def _linearize(blocks: Sequence[ResidualBlock], params: Params, layout: _Layout,
               weights: Dict[str, Tensor], method: str) -> _Normal:
    B, G, S, L = layout.batch, layout.groups, layout.n_global, layout.n_group
    opts = dict(dtype=layout.dtype, device=layout.device)
    H_ss = torch.zeros(B, S, S, **opts)
    g_s = torch.zeros(B, S, **opts)
    grouped = L > 0 and G > 0
    H_sl = torch.zeros(B, G, S, L, **opts) if grouped else None
    H_ll = torch.zeros(B, G, L, L, **opts) if grouped else None
    g_l = torch.zeros(B, G, L, **opts) if grouped else None
    costs = {}
    for block in blocks:
        r, jac = _linearize_block(block, params, layout, method)
        c, irls = _block_cost(block, r)
        costs[block.name] = c
        w = weights[block.name][..., None] * irls  # (B, [G,] M)
        Js, idx_s = _compact_columns(jac, layout, False)
        Jl, idx_l = _compact_columns(jac, layout, True) if block.per_group else (None, None)
        if Js is None and Jl is None:
            continue
        parts = [J for J in (Js, Jl) if J is not None]
        Jc = torch.cat(parts, -1) if len(parts) > 1 else parts[0]
        WJ = Jc * w[..., None]
        Hc = Jc.transpose(-1, -2) @ WJ  # (B, [G,] n_s + n_l, n_s + n_l)
        gc = (WJ * r[..., None]).sum(-2)
        n_s = 0 if Js is None else Js.shape[-1]
        if Js is not None:
            H_block, g_block = Hc[..., :n_s, :n_s], gc[..., :n_s]
            if block.per_group:
                H_block, g_block = H_block.sum(1), g_block.sum(1)
            H_ss = _add_block(H_ss, idx_s, idx_s, H_block)
            g_s = g_s.index_add(-1, idx_s, g_block) if len(idx_s) < S else g_s + g_block
        if Jl is not None:
            if Js is not None:
                H_sl = _add_block(H_sl, idx_s, idx_l, Hc[..., :n_s, n_s:])
            H_ll = _add_block(H_ll, idx_l, idx_l, Hc[..., n_s:, n_s:])
            g_l = g_l.index_add(-1, idx_l, gc[..., n_s:]) if len(idx_l) < L else g_l + gc[..., n_s:]
    cost, summary = _total(costs, weights, B, g_s)
    return _Normal(H_ss, g_s, H_sl, H_ll, g_l, cost, summary)


# --------------------------------------------------------------------------- step
def _mask_active(H: Tensor, g: Tensor, keep: Tensor) -> Tuple[Tensor, Tensor]:
    """Hold variables with ``keep == 0``: zero their rows/columns and gradient, unit diagonal."""
    Hm = H * keep[..., :, None] * keep[..., None, :]
    Hm = Hm + torch.diag_embed(1.0 - keep)
    return Hm, g * keep


def _damped(H: Tensor, lam: Tensor, mode: str) -> Tensor:
    """``H + lam * D`` with lam broadcast over the leading axes of H (B or B, G)."""
    diag = H.diagonal(dim1=-2, dim2=-1)
    D = diag if mode == "marquardt" else torch.ones_like(diag)
    while lam.dim() < D.dim():
        lam = lam[..., None]
    return H + torch.diag_embed(lam * D)


def _matvec(ne: _Normal, vs: Tensor, vl: Tensor) -> Tuple[Tensor, Tensor]:
    """Undamped ``H @ v`` in arrow form."""
    out_s = (ne.H_ss @ vs[..., None]).squeeze(-1)
    if ne.H_ll is None:
        return out_s, vl
    out_s = out_s + (ne.H_sl @ vl[..., None]).squeeze(-1).sum(1)
    out_l = (ne.H_ll @ vl[..., None]).squeeze(-1) + (vs[:, None, None, :] @ ne.H_sl).squeeze(-2)
    return out_s, out_l


def _step(ne: _Normal, lam: Tensor, mode: str, keep: Optional[Tuple[Tensor, Tensor]] = None,
          fixed: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
    """Solve the damped arrow system for (dx_s (B, S), dx_l (B, G, L)).

    Variables with ``keep == 0`` take the prescribed step ``fixed`` (zero where kept); the others
    solve the system with those steps moved to the right-hand side.
    """
    H_ss, g_s, H_sl, H_ll, g_l = ne.H_ss, ne.g_s, ne.H_sl, ne.H_ll, ne.g_l
    if fixed is not None:
        hs, hl = _matvec(ne, *fixed)
        g_s = g_s + hs
        g_l = g_l + hl if g_l is not None else None
    if keep is not None:
        keep_s, keep_l = keep
        H_ss, g_s = _mask_active(H_ss, g_s, keep_s)
        if H_ll is not None:
            H_ll, g_l = _mask_active(H_ll, g_l, keep_l)
            H_sl = H_sl * keep_s[:, None, :, None] * keep_l[:, :, None, :]
    A_ss = _damped(H_ss, lam, mode)
    if H_ll is None:
        dxs = solve_spd(A_ss, -g_s) if A_ss.shape[-1] else g_s
        dxl = torch.zeros(g_s.shape[0], 0, 0, dtype=g_s.dtype, device=g_s.device)
    else:
        L_ll, _ = robust_cholesky(_damped(H_ll, lam[:, None], mode))
        z = torch.cholesky_solve(g_l.unsqueeze(-1), L_ll)  # (B, G, L, 1)
        if A_ss.shape[-1] == 0:
            dxs, dxl = g_s, -z.squeeze(-1)
        else:
            Y = torch.cholesky_solve(H_sl.transpose(-1, -2), L_ll)  # (B, G, L, S)
            A_red = A_ss - (H_sl @ Y).sum(1)
            A_red = 0.5 * (A_red + A_red.transpose(-1, -2))
            rhs = -g_s + (H_sl @ z).sum(1).squeeze(-1)
            dxs = solve_spd(A_red, rhs)
            dxl = -z.squeeze(-1) - (Y @ dxs[:, None, :, None]).squeeze(-1)
    if fixed is not None:
        dxs, dxl = dxs + fixed[0], (dxl + fixed[1]) if dxl.numel() else dxl
    return dxs, dxl


def _bounded_step(ne: _Normal, lam: Tensor, mode: str, xs: Tensor, xl: Tensor,
                  box: Tuple[Tensor, Tensor, Tensor, Tensor], refinements: int = 4
                  ) -> Tuple[Tensor, Tensor]:
    """Damped step under box constraints by an active set.

    Variables at a bound whose gradient pushes outwards are held. Variables whose step would
    cross a bound are then stopped exactly at it and the rest re-solved, a few times, so that
    the final projection rarely bends the step.
    """
    lo_s, hi_s, lo_l, hi_l = box
    parts = 2 if ne.g_l is not None else 1  # global part, and the per-group part if any
    x, lo, hi, g = (xs, xl)[:parts], (lo_s, lo_l)[:parts], (hi_s, hi_l)[:parts], (ne.g_s, ne.g_l)
    keep = [_keep_mask(x[i], g[i], lo[i], hi[i]) for i in range(parts)]
    fixed = [torch.zeros_like(x[i]) for i in range(parts)]

    def solve_part() -> Tuple[Tensor, Tensor]:
        if parts == 2:
            return _step(ne, lam, mode, (keep[0], keep[1]), (fixed[0], fixed[1]))
        dxs, dxl = _step(ne, lam, mode, (keep[0], None), (fixed[0], torch.zeros_like(xl)))
        return dxs, dxl

    dx = solve_part()
    for _ in range(refinements):
        crossing = [((x[i] + dx[i] < lo[i]) | (x[i] + dx[i] > hi[i])) & (keep[i] > 0)
                    for i in range(parts)]
        if not any(bool(c.any()) for c in crossing):
            break
        for i in range(parts):
            to_bound = torch.clamp(x[i] + dx[i], lo[i], hi[i]) - x[i]
            fixed[i] = torch.where(crossing[i], to_bound, fixed[i])
            keep[i] = keep[i] * (~crossing[i]).to(keep[i].dtype)
        dx = solve_part()
    return dx


def _keep_mask(x: Tensor, g: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """1 for free variables, 0 for those at a bound with the gradient pushing outwards."""
    held = ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
    return (~held).to(x.dtype)


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(mask.reshape(mask.shape[0], *([1] * (a.dim() - 1))), a, b)


# --------------------------------------------------------------------------- driver
def _resolve_weights(blocks: Sequence[ResidualBlock], layout: _Layout,
                     override: Optional[Mapping[str, Weight]]) -> Dict[str, Tensor]:
    override = override or {}
    unknown = set(override) - {b.name for b in blocks}
    if unknown:
        raise ValueError(f"weights given for unknown or disabled blocks {sorted(unknown)}")
    return {b.name: _block_weight(b, override.get(b.name, b.weight), layout) for b in blocks}


def _as_damping(value: Weight, layout: _Layout, what: str) -> Tensor:
    lam = torch.as_tensor(value, dtype=layout.dtype, device=layout.device)
    if lam.dim() == 0:
        lam = lam.expand(layout.batch)
    if tuple(lam.shape) != (layout.batch,):
        raise ValueError(f"{what}: expected a float or shape ({layout.batch},), got {tuple(lam.shape)}")
    return lam


def evaluate_cost(blocks: Sequence[ResidualBlock], params: Params, *,
                  free: Optional[Sequence[str]] = None, per_group: Sequence[str] = ()
                  ) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Weighted total cost (B,) and unweighted per-block costs {name: (B,)} of enabled blocks.

    ``free`` and ``per_group`` as in `solve` (they fix the batch and group sizes).
    """
    blocks = [b for b in blocks if b.enabled]
    layout = _Layout(params, list(free) if free is not None else list(params), per_group)
    return _evaluate(blocks, params, layout, _resolve_weights(blocks, layout, None))


def solve(blocks: Sequence[ResidualBlock], params: Params, *,
          free: Optional[Sequence[str]] = None, per_group: Sequence[str] = (),
          bounds: Optional[Mapping[str, Tuple[Weight, Weight]]] = None,
          config: SolverConfig = SolverConfig(),
          control: Optional[Callable[[IterationState], Optional[IterationControl]]] = None,
          damping: Optional[Weight] = None) -> SolveResult:
    """Minimize the weighted sum of squared residual blocks by Levenberg-Marquardt.

    Args:
        blocks: residual blocks; disabled ones are ignored. Names must be unique.
        params: all variables, batch first; ``free`` ones are optimized, the rest held fixed.
        free: names of the variables to optimize (default: every entry of ``params``).
        per_group: names (among ``free``) with a group axis, shape (B, G, ...).
        bounds: ``{name: (low, high)}``, floats or tensors broadcastable to the variable; the
            initial values are projected into the box.
        config: see `SolverConfig`.
        control: called at every iteration with an `IterationState`; may return an
            `IterationControl` overriding the damping and block weights of that iteration.
        damping: initial damping, float or (B,) (default ``config.damping``).

    Returns:
        `SolveResult` with the solution, final cost and per-iteration cost history.
    """
    blocks = [b for b in blocks if b.enabled]
    names = [b.name for b in blocks]
    if len(set(names)) != len(names):
        raise ValueError(f"blocks: names must be unique, got {names}")
    if not blocks:
        raise ValueError("blocks: no enabled residual block")
    free = list(free) if free is not None else list(params)
    unknown_grouped = [n for n in per_group if n not in free]
    if unknown_grouped:
        raise ValueError(f"per_group: {unknown_grouped} are not free variables")
    context = torch.enable_grad() if config.differentiable else torch.no_grad()
    with context:
        if not config.differentiable:
            params = {n: (t.detach() if isinstance(t, Tensor) else t) for n, t in params.items()}
        return _solve(blocks, dict(params), free, list(per_group), bounds, config, control,
                      damping)


def _solve(blocks: List[ResidualBlock], params: Dict[str, Tensor], free: List[str],
           per_group: List[str], bounds, config: SolverConfig, control, damping) -> SolveResult:
    layout = _Layout(params, free, per_group)
    box = layout.bounds(bounds)
    xs, xl = layout.pack(params)
    if box is not None:
        xs, xl = torch.clamp(xs, box[0], box[1]), torch.clamp(xl, box[2], box[3])
    params = layout.unpack(xs, xl, params)
    B = layout.batch
    lam = _as_damping(config.damping if damping is None else damping, layout, "damping")
    base_weights = _resolve_weights(blocks, layout, None)
    weights = base_weights
    cost, block_costs = _evaluate(blocks, params, layout, weights)
    history = [cost]
    converged = torch.zeros(B, dtype=torch.bool, device=layout.device)
    iterations = torch.zeros(B, dtype=torch.long, device=layout.device)
    rejections = torch.zeros(B, dtype=torch.long, device=layout.device)
    tolerance = config.mode == "tolerance"
    ne: Optional[_Normal] = None
    for it in range(config.max_iterations):
        active = ~converged
        if tolerance and not bool(active.any()):
            break
        lam_it = lam
        if control is not None:
            ctrl = control(IterationState(it, dict(params), dict(block_costs), lam))
            if ctrl is not None:
                weights = _resolve_weights(blocks, layout, ctrl.weights)
                if ctrl.damping is not None:
                    lam_it = _as_damping(ctrl.damping, layout, "IterationControl.damping")
            ne = None
        if ne is None:
            ne = _linearize(blocks, params, layout, weights, config.jacobian)
        cost = ne.cost
        if box is None:
            dxs, dxl = _step(ne, lam_it, config.damping_mode)
        else:
            dxs, dxl = _bounded_step(ne, lam_it, config.damping_mode, xs, xl, box)
        xs_c = xs + dxs
        xl_c = xl + dxl if dxl.numel() else xl
        if box is not None:
            xs_c, xl_c = torch.clamp(xs_c, box[0], box[1]), torch.clamp(xl_c, box[2], box[3])
        params_c = layout.unpack(xs_c, xl_c, params)
        cost_c, block_costs_c = _evaluate(blocks, params_c, layout, weights)
        finite = torch.isfinite(cost_c)
        accept = finite & (cost_c < cost) if config.adaptive else finite
        accept = accept & active
        xs, xl = _where(accept, xs_c, xs), _where(accept, xl_c, xl)
        params = layout.unpack(xs, xl, params)
        new_cost = torch.where(accept, cost_c, cost)
        block_costs = {n: torch.where(accept, block_costs_c[n], c) for n, c in block_costs.items()}
        if config.adaptive:
            factor = torch.where(accept, torch.full_like(lam, config.damping_decrease),
                                 torch.full_like(lam, config.damping_increase))
            lam = torch.where(active, (lam_it * factor).clamp(config.min_damping,
                                                              config.max_damping), lam)
        iterations = iterations + active.long()
        rejections = torch.where(accept, torch.zeros_like(rejections), rejections + active.long())
        if tolerance:
            step = torch.sqrt((dxs.detach() ** 2).sum(-1) + (dxl.detach() ** 2).flatten(1).sum(-1))
            size = torch.sqrt((xs.detach() ** 2).sum(-1) + (xl.detach() ** 2).flatten(1).sum(-1))
            small_decrease = accept & ((cost - cost_c).detach() <= config.ftol * cost.detach())
            small_step = accept & (step <= config.xtol * (config.xtol + size))
            stalled = rejections >= config.max_rejections
            done = small_decrease | small_step | stalled | (new_cost.detach() == 0)
            converged = converged | (active & done)
        cost = new_cost
        history.append(cost)
        if bool(accept.any()):
            ne = None
    return SolveResult(params=params, cost=cost, history=torch.stack(history, 1),
                       block_costs=block_costs, iterations=iterations, converged=converged,
                       damping=lam)
