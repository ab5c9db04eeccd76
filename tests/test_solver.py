"""Solver units: known least-squares problems against scipy, Jacobians against finite
differences, batching, the multi-image (Schur) path, gradients through the unrolled solver and
the Cholesky fallback."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch

from core.fitting.solver import (IterationControl, ResidualBlock, SolverConfig, block_jacobian, evaluate_cost,
                                 robust_cholesky, solve, solve_spd)

F64 = torch.float64
TIGHT = SolverConfig(max_iterations=200, ftol=1e-15, xtol=1e-15)


def _scipy(fun, x0, **kw):
    return scipy.optimize.least_squares(fun, x0, ftol=1e-15, xtol=1e-15, gtol=1e-15, **kw).x


# --------------------------------------------------------------------------- problems
def _linear(A: torch.Tensor, b: torch.Tensor) -> ResidualBlock:
    return ResidualBlock("linear", lambda p: (A @ p["x"][..., None]).squeeze(-1) - b)


def _rosenbrock(p):
    x = p["x"]
    return torch.stack([10 * (x[:, 1] - x[:, 0] ** 2), 1 - x[:, 0]], -1)


T_EXP = torch.linspace(0, 4, 12, dtype=F64)


def _exp_data(batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = 1.0 + torch.rand(batch, 1, generator=g, dtype=F64)
    b = 0.3 + torch.rand(batch, 1, generator=g, dtype=F64)
    c = 0.5 * torch.rand(batch, 1, generator=g, dtype=F64)
    noise = 0.02 * torch.randn(batch, len(T_EXP), generator=g, dtype=F64)
    return a * torch.exp(-b * T_EXP) + c + noise


def _exp_block(y: torch.Tensor, **kw) -> ResidualBlock:
    def residual(p):
        a, b, c = p["abc"].unbind(-1)
        return a[:, None] * torch.exp(-b[:, None] * T_EXP) + c[:, None] - y
    return ResidualBlock("exp", residual, **kw)


def _exp_np(y: np.ndarray):
    t = T_EXP.numpy()
    return lambda q: q[0] * np.exp(-q[1] * t) + q[2] - y


# --------------------------------------------------------------------------- vs scipy
def test_linear_least_squares_matches_lstsq_and_scipy_with_bounds():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 10, 4, generator=g, dtype=F64)
    b = torch.randn(3, 10, generator=g, dtype=F64)
    res = solve([_linear(A, b)], {"x": torch.zeros(3, 4, dtype=F64)}, config=TIGHT)
    ref = torch.linalg.lstsq(A, b[..., None]).solution.squeeze(-1)
    assert torch.allclose(res.params["x"], ref, atol=1e-8)
    assert res.converged.all()
    res = solve([_linear(A, b)], {"x": torch.zeros(3, 4, dtype=F64)}, bounds={"x": (-0.1, 0.1)},
                config=TIGHT)
    for i in range(3):
        ref = _scipy(lambda x: A[i].numpy() @ x - b[i].numpy(), np.zeros(4), bounds=(-0.1, 0.1))
        assert np.allclose(res.params["x"][i].numpy(), ref, atol=1e-7)
    assert (res.params["x"].abs() <= 0.1 + 1e-12).all()
    assert (res.params["x"].abs() > 0.1 - 1e-9).any(), "the box should be active here"


@pytest.mark.parametrize("bounded", [False, True])
def test_rosenbrock_matches_scipy(bounded):
    x0 = torch.tensor([[-1.2, 1.0], [2.0, -1.0], [0.5, 3.0]], dtype=F64)
    box = ([-2.0, -2.0], [0.5, 2.0])
    res = solve([ResidualBlock("rosen", _rosenbrock)], {"x": x0},
                bounds={"x": box} if bounded else None, config=TIGHT)
    for i in range(3):
        fun = lambda q: np.array([10 * (q[1] - q[0] ** 2), 1 - q[0]])  # noqa: E731
        start = np.clip(x0[i].numpy(), *box) if bounded else x0[i].numpy()
        ref = _scipy(fun, start, **({"bounds": box} if bounded else {}))
        assert np.allclose(res.params["x"][i].numpy(), ref, atol=1e-7)
    expected = [0.5, 0.25] if bounded else [1.0, 1.0]
    assert torch.allclose(res.params["x"], torch.tensor(expected, dtype=F64).expand(3, 2), atol=1e-7)


@pytest.mark.parametrize("bounded", [False, True])
def test_exponential_fit_matches_scipy(bounded):
    y = _exp_data(4)
    x0 = torch.tensor([1.0, 0.1, 0.0], dtype=F64).expand(4, 3)
    box = ([0.0, 0.0, 0.0], [5.0, 0.4, 0.2])
    res = solve([_exp_block(y)], {"abc": x0}, bounds={"abc": box} if bounded else None, config=TIGHT)
    for i in range(4):
        ref = _scipy(_exp_np(y[i].numpy()), x0[i].numpy(), **({"bounds": box} if bounded else {}))
        assert np.allclose(res.params["abc"][i].numpy(), ref, atol=1e-6)


def test_huber_matches_scipy_huber_loss():
    g = torch.Generator().manual_seed(3)
    t = torch.linspace(0, 1, 20, dtype=F64)
    y = 2 * t + 1 + 0.05 * torch.randn(20, generator=g, dtype=F64)
    y[[3, 11, 17]] += torch.tensor([3.0, -2.0, 4.0], dtype=F64)
    block = ResidualBlock("line", lambda p: p["x"][:, :1] * t + p["x"][:, 1:] - y, huber=0.1)
    res = solve([block], {"x": torch.zeros(1, 2, dtype=F64)}, config=TIGHT)
    ref = _scipy(lambda q: q[0] * t.numpy() + q[1] - y.numpy(), np.zeros(2), loss="huber",
                 f_scale=0.1)
    assert np.allclose(res.params["x"][0].numpy(), ref, atol=1e-6)
    assert abs(float(res.params["x"][0, 0]) - 2.0) < 0.1  # outliers ignored


# --------------------------------------------------------------------------- Jacobians
def _finite_difference(block, params, name, eps=1e-6):
    x = params[name]
    cols = []
    for j in range(x[0].numel()):
        d = torch.zeros_like(x).reshape(x.shape[0], -1)
        d[:, j] = eps
        d = d.reshape(x.shape)
        plus = block.residual({**params, name: x + d})
        minus = block.residual({**params, name: x - d})
        cols.append((plus - minus) / (2 * eps))
    return torch.stack(cols, -1).reshape(*cols[0].shape, *x.shape[1:])


@pytest.mark.parametrize("method", ["forward", "reverse"])
def test_automatic_jacobians_match_finite_differences(method):
    params = {"abc": torch.tensor([[1.3, 0.4, 0.2], [0.7, 0.9, -0.1]], dtype=F64)}
    block = _exp_block(_exp_data(2))
    _, jac = block_jacobian(block, params, method=method)
    assert torch.allclose(jac["abc"], _finite_difference(block, params, "abc"), atol=1e-7)


def test_closed_form_jacobian_is_used_and_partial_ones_are_completed():
    x = torch.tensor([[0.3, -0.2], [1.1, 0.5]], dtype=F64)
    s = torch.tensor([[2.0], [0.5]], dtype=F64)

    def residual(p):
        return torch.cat([p["s"] * torch.sin(p["x"]), p["x"] ** 2], -1)

    def linearize(p):  # closed form for x only; s left to autodiff
        J = torch.cat([torch.diag_embed(p["s"] * torch.cos(p["x"])),
                       torch.diag_embed(2 * p["x"])], 1)
        return residual(p), {"x": J}

    block = ResidualBlock("mixed", residual, linearize=linearize)
    params = {"x": x, "s": s}
    _, jac = block_jacobian(block, params)
    for name in params:
        assert torch.allclose(jac[name], _finite_difference(block, params, name), atol=1e-7)


# --------------------------------------------------------------------------- batching
def test_batch_elements_solved_jointly_equal_one_by_one():
    y = _exp_data(5, seed=7)
    x0 = torch.tensor([1.0, 0.1, 0.0], dtype=F64).expand(5, 3).clone()
    x0[2] = torch.tensor([3.0, 2.0, 1.0])  # a harder start: more iterations than the others
    config = SolverConfig(max_iterations=100, ftol=1e-12, xtol=1e-12)
    joint = solve([_exp_block(y)], {"abc": x0}, config=config)
    assert len(set(joint.iterations.tolist())) > 1, "elements should stop independently"
    for i in range(5):
        alone = solve([_exp_block(y[i:i + 1])], {"abc": x0[i:i + 1]}, config=config)
        assert torch.allclose(joint.params["abc"][i], alone.params["abc"][0], atol=1e-10)
        assert int(joint.iterations[i]) == int(alone.iterations[0])


def _two_level_problem(P: int = 2, G: int = 3, seed: int = 1):
    """Shared (per-person) `s` and per-image `l`; residuals of image g use s and l[g]."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(P, G, 6, 2, generator=g, dtype=F64)
    C = torch.randn(P, G, 6, 3, generator=g, dtype=F64)
    y = torch.randn(P, G, 6, generator=g, dtype=F64)

    def residual(p):
        s = p["s"][:, None, :, None].expand(P, G, 2, 1)
        lin = (A @ torch.tanh(s)).squeeze(-1) + (C @ p["l"][..., None]).squeeze(-1)
        return lin + 0.1 * (p["l"] ** 2).sum(-1, keepdim=True) - y

    params = {"s": torch.zeros(P, 2, dtype=F64), "l": torch.zeros(P, G, 3, dtype=F64)}
    prior = ResidualBlock("prior", lambda p: p["s"], weight=0.1, depends_on=("s",))
    return ResidualBlock("data", residual, per_group=True), prior, params


def test_per_group_schur_solve_equals_flattened_global_solve():
    data, prior, params = _two_level_problem()
    P, G = params["l"].shape[:2]
    box = {"l": (-0.3, 0.3)}
    grouped = solve([data, prior], params, per_group=["l"], bounds=box, config=TIGHT)
    flat_data = ResidualBlock("data", lambda p: data.residual(
        {"s": p["s"], "l": p["l"].reshape(P, G, 3)}).reshape(P, -1))
    flat = solve([flat_data, ResidualBlock("prior", prior.residual, weight=0.1)],
                 {"s": params["s"], "l": params["l"].reshape(P, -1)}, bounds=box, config=TIGHT)
    assert torch.allclose(grouped.params["s"], flat.params["s"], atol=1e-9)
    assert torch.allclose(grouped.params["l"], flat.params["l"].reshape(P, G, 3), atol=1e-9)
    assert torch.allclose(grouped.cost, flat.cost, atol=1e-12)


def test_global_block_must_not_depend_on_per_group_variables():
    data, prior, params = _two_level_problem()
    bad = ResidualBlock("bad", lambda p: p["l"].flatten(1))
    with pytest.raises(ValueError, match="depends_on"):
        solve([data, bad], params, per_group=["l"])
    bad = ResidualBlock("bad", lambda p: p["l"].flatten(1), depends_on=("l",))
    with pytest.raises(ValueError, match="per-group"):
        solve([data, bad], params, per_group=["l"])


# --------------------------------------------------------------------------- modes
def test_fixed_mode_runs_all_iterations_and_history_decreases():
    y = _exp_data(3)
    x0 = torch.tensor([1.0, 0.1, 0.0], dtype=F64).expand(3, 3)
    res = solve([_exp_block(y)], {"abc": x0}, config=SolverConfig(max_iterations=7, mode="fixed"))
    assert res.history.shape == (3, 8)
    assert (res.iterations == 7).all() and not res.converged.any()
    assert (res.history[:, 1:] <= res.history[:, :-1] + 1e-15).all()
    cost, per_block = evaluate_cost([_exp_block(y)], res.params)
    assert torch.allclose(cost, res.cost) and torch.allclose(per_block["exp"], res.cost)


def test_control_overrides_weights_and_damping():
    """Weights from `control` change the optimum to the weighted mean; damping is recorded."""
    y1 = torch.tensor([[0.0], [1.0]], dtype=F64)
    y2 = torch.tensor([[4.0], [3.0]], dtype=F64)
    blocks = [ResidualBlock("a", lambda p: p["x"] - y1), ResidualBlock("b", lambda p: p["x"] - y2)]
    seen = []

    def control(state):
        seen.append(state.damping.clone())
        assert set(state.block_costs) == {"a", "b"}
        return IterationControl(damping=torch.full((2,), 1e-3, dtype=F64),
                                weights={"b": torch.tensor([3.0, 1.0], dtype=F64)})

    res = solve(blocks, {"x": torch.zeros(2, 1, dtype=F64)}, control=control,
                config=SolverConfig(max_iterations=5, mode="fixed", adaptive=False))
    expected = torch.tensor([[(0 + 3 * 4) / 4], [(1 + 3) / 2]], dtype=F64)
    assert torch.allclose(res.params["x"], expected, atol=1e-6)
    assert len(seen) == 5


# --------------------------------------------------------------------------- gradients
def test_gradients_through_unrolled_solver_pass_gradcheck():
    """d(solution)/d(data, start, block weight, per-iteration damping) through 3 LM steps."""
    y = _exp_data(2, seed=5)
    x0 = torch.tensor([[1.2, 0.5, 0.1], [1.0, 0.8, 0.2]], dtype=F64)
    prior_mean = torch.tensor([1.0, 0.5, 0.0], dtype=F64)
    config = SolverConfig(max_iterations=3, mode="fixed", adaptive=False, differentiable=True)

    def unrolled(y, x0, prior_weight, damping):
        def control(state):
            return IterationControl(damping=damping[state.iteration])
        blocks = [_exp_block(y), ResidualBlock("prior", lambda p: p["abc"] - prior_mean,
                                               weight=prior_weight)]
        return solve(blocks, {"abc": x0}, config=config, control=control).params["abc"]

    inputs = (y.clone().requires_grad_(), x0.clone().requires_grad_(),
              torch.tensor([0.05, 0.2], dtype=F64, requires_grad=True),
              torch.tensor([[0.1, 0.3], [0.05, 0.2], [0.01, 0.1]], dtype=F64, requires_grad=True))
    assert torch.autograd.gradcheck(unrolled, inputs, eps=1e-6, atol=1e-6)


def test_non_differentiable_mode_returns_detached_results():
    x0 = torch.tensor([[1.0, 0.1, 0.0]], dtype=F64, requires_grad=True)
    res = solve([_exp_block(_exp_data(1))], {"abc": x0})
    assert not res.params["abc"].requires_grad


# --------------------------------------------------------------------------- Cholesky fallback
def test_robust_cholesky_repairs_singular_and_non_finite_matrices():
    v = torch.tensor([[1.0, 2.0, 0.0]], dtype=F64)
    singular = v.T @ v  # rank 1
    bad = torch.full((3, 3), float("nan"), dtype=F64)
    good = torch.eye(3, dtype=F64) * 2
    A = torch.stack([singular, bad, good])
    L, repaired = robust_cholesky(A)
    assert repaired.tolist() == [True, True, False]
    assert torch.isfinite(L).all()
    assert torch.allclose(L[2], good.sqrt())  # untouched
    b = torch.stack([v[0] * 3.0, torch.ones(3, dtype=F64), torch.ones(3, dtype=F64)])
    x = solve_spd(A, b)
    assert torch.isfinite(x).all()
    assert torch.allclose(singular @ x[0], b[0], atol=1e-5)  # b in the range: still solved
    assert torch.allclose(x[2], b[2] / 2)


def test_singular_normal_equations_still_give_finite_steps():
    """Pure Gauss-Newton (no damping) with an unused variable: J^T J is singular."""
    g = torch.Generator().manual_seed(2)
    A = torch.randn(1, 8, 2, generator=g, dtype=F64)
    b = torch.randn(1, 8, generator=g, dtype=F64)
    block = ResidualBlock("lin", lambda p: (A @ p["x"][:, :2, None]).squeeze(-1) - b)
    x0 = torch.tensor([[0.0, 0.0, 0.7]], dtype=F64)
    res = solve([block], {"x": x0}, config=SolverConfig(max_iterations=3, damping=0.0,
                                                         adaptive=False, mode="fixed"))
    assert torch.isfinite(res.params["x"]).all()
    ref = torch.linalg.lstsq(A, b[..., None]).solution.squeeze(-1)
    assert torch.allclose(res.params["x"][:, :2], ref, atol=1e-6)
    assert float(res.params["x"][0, 2]) == pytest.approx(0.7)


# --------------------------------------------------------------------------- validation
def test_bad_inputs_raise_clear_errors():
    x = {"x": torch.zeros(2, 3, dtype=F64)}
    with pytest.raises(ValueError, match="residual of block 'r'"):
        solve([ResidualBlock("r", lambda p: p["x"].sum())], x)
    with pytest.raises(ValueError, match="'y' is not in params"):
        solve([ResidualBlock("r", lambda p: p["x"])], x, free=["y"])
    with pytest.raises(ValueError, match="unique"):
        solve([ResidualBlock("r", lambda p: p["x"])] * 2, x)
    with pytest.raises(ValueError, match="weight of block"):
        solve([ResidualBlock("r", lambda p: p["x"], weight=torch.ones(5))], x)
    with pytest.raises(ValueError, match="lower bound exceeds"):
        solve([ResidualBlock("r", lambda p: p["x"])], x, bounds={"x": (1.0, 0.0)})
