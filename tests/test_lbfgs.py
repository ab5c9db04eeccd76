"""The shading stage's optimiser: converges on known minima, keeps its budgets, and needs no
``torch._dynamo`` (whose import ``torch.optim`` optimisers pay on creation)."""
from __future__ import annotations

import torch

from core.fitting.lbfgs import minimize_lbfgs
from tests.conftest import imports_module


def rosenbrock(x: torch.Tensor):
    x = x.detach().requires_grad_(True)
    f = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
    return float(f.detach()), torch.autograd.grad(f, x)[0]


def test_rosenbrock_reaches_its_minimum():
    result = minimize_lbfgs(rosenbrock, torch.tensor([-1.2, 1.0], dtype=torch.float64), max_iterations=200)
    assert torch.allclose(result.x, torch.ones(2, dtype=torch.float64), atol=1e-5)
    assert result.loss < 1e-10 and result.iterations < 60


def _quadratic(n: int, decades: float, seed: int):
    """``sum_i s_i (x_i - t_i)^2`` with curvatures over ``decades`` orders of magnitude: (f, t)."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, decades, n, dtype=torch.float64)
    target = torch.randn(n, generator=g, dtype=torch.float64)

    def f(x):
        r = x - target
        return float((scales * r * r).sum()), 2 * scales * r

    return f, target


def test_ill_conditioned_quadratic_is_solved_in_few_iterations():
    f, target = _quadratic(30, 4, seed=0)
    result = minimize_lbfgs(f, torch.zeros(30, dtype=torch.float64), max_iterations=200)
    assert torch.allclose(result.x, target, atol=1e-6)
    assert result.iterations <= 100  # a few times the dimension (inexact line searches, as torch's LBFGS)


def test_budgets_and_stopping_rules():
    calls = []

    def f(x):
        calls.append(1)
        return rosenbrock(x)

    result = minimize_lbfgs(f, torch.tensor([-1.2, 1.0], dtype=torch.float64), max_iterations=5)
    assert result.iterations <= 5 and result.evaluations == len(calls) <= 5 * 5 // 4
    calls.clear()
    result = minimize_lbfgs(f, torch.tensor([-1.2, 1.0], dtype=torch.float64), max_iterations=50,
                            max_evaluations=7)
    assert result.evaluations == len(calls) <= 7
    at_minimum = minimize_lbfgs(rosenbrock, torch.ones(2, dtype=torch.float64), max_iterations=50)
    assert at_minimum.iterations == 0 and at_minimum.evaluations == 1  # zero gradient: nothing to do


def test_carried_memory_continues_where_the_last_run_stopped():
    """A second run from where a first one stopped, with the first run's curvature pairs, takes
    quasi-Newton steps at once and gets nearer the minimum in the same iterations than one starting
    afresh (which begins with a short gradient step and no curvature)."""
    f, _ = _quadratic(40, 3, seed=1)
    first = minimize_lbfgs(f, torch.zeros(40, dtype=torch.float64), max_iterations=15)
    steps, changes = first.memory
    held = len(steps)
    assert 0 < held == len(changes) <= 15
    carried = minimize_lbfgs(f, first.x, max_iterations=10, memory=first.memory)
    fresh = minimize_lbfgs(f, first.x, max_iterations=10)
    assert carried.loss < 0.5 * fresh.loss < 0.5 * first.loss
    assert len(steps) == len(changes) == held  # the caller's lists are left as they were


def test_the_rig_builder_does_not_import_torch_dynamo():
    code = ("import torch\n"
            "from core.fitting.lbfgs import minimize_lbfgs\n"
            "minimize_lbfgs(lambda x: (float((x * x).sum()), 2 * x), torch.ones(3), max_iterations=5)\n"
            "import core.rig.builder, core.fitting.shading_refine\n")
    assert imports_module(code, "torch._dynamo") is False
