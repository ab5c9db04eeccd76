"""One Euro filter: analytic cases, jitter removal, little lag on fast motion, track figures."""

import math

import numpy as np
import pytest

from utils.landmarks.filters import OneEuroFilter, OneEuroParams, mean_deviation, mean_motion, smooth_track


def test_first_sample_passes_and_constant_stays_constant():
    f = OneEuroFilter()
    x = np.array([[3.0, -2.0], [10.0, 5.5]])
    np.testing.assert_array_equal(f(x, 0.0), x)
    for i in range(1, 20):
        np.testing.assert_allclose(f(x, i / 30), x, atol=1e-12)


def test_beta_zero_is_exponential_smoothing():
    """With beta = 0 the cutoff is fixed: a step converges as 1 - (1 - a)^n, a = 1/(1+tau/dt)."""
    cutoff, dt = 2.0, 0.04
    a = 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff) / dt)
    f = OneEuroFilter(OneEuroParams(min_cutoff=cutoff, beta=0.0))
    f(np.zeros((1, 2)), 0.0)
    for n in range(1, 10):
        out = f(np.ones((1, 2)), n * dt)
        np.testing.assert_allclose(out, 1 - (1 - a) ** n, rtol=1e-12)


def test_removes_jitter_of_a_still_point():
    rng = np.random.default_rng(0)
    truth = np.full((300, 68, 2), 100.0)
    noisy = truth + rng.normal(0, 1.0, truth.shape)
    smooth = smooth_track(noisy, fps=30)
    assert mean_motion(smooth[30:]) < 0.4 * mean_motion(noisy[30:])
    assert mean_deviation(smooth[30:], truth[30:]) < 0.65 * mean_deviation(noisy[30:], truth[30:])


def test_fast_motion_has_little_lag():
    """A point moving at 600 px/s: the speed-adaptive cutoff lags far less than a fixed one."""
    t = np.arange(60) / 30.0
    track = np.zeros((60, 1, 2))
    track[:, 0, 0] = 600.0 * t
    adaptive = smooth_track(track, 30, OneEuroParams(min_cutoff=1.0, beta=0.3))
    fixed = smooth_track(track, 30, OneEuroParams(min_cutoff=1.0, beta=0.0))
    lag_adaptive = abs(track[-1, 0, 0] - adaptive[-1, 0, 0])
    lag_fixed = abs(track[-1, 0, 0] - fixed[-1, 0, 0])
    assert lag_adaptive < 2.0
    assert lag_adaptive < 0.1 * lag_fixed


def test_speed_is_per_point_norm():
    """A point moving diagonally is smoothed like one moving along an axis at the same speed."""
    steps = np.arange(10)[:, None] / 30.0
    axis = np.hstack([200 * steps, 0 * steps])[:, None]
    diagonal = (200 / math.sqrt(2)) * np.hstack([steps, steps])[:, None]
    out_axis, out_diag = smooth_track(axis, 30), smooth_track(diagonal, 30)
    np.testing.assert_allclose(np.linalg.norm(out_axis[-1]), np.linalg.norm(out_diag[-1]),
                               rtol=1e-9)


def test_nan_frames_restart_the_filter():
    track = np.zeros((6, 2, 2))
    track[3:] = 50.0
    track[2] = np.nan
    out = smooth_track(track, 25)
    assert np.isnan(out[2]).all()
    np.testing.assert_array_equal(out[3], track[3])  # first sample after the gap passes


def test_bad_input_errors():
    f = OneEuroFilter()
    f(np.zeros((3, 2)), 1.0)
    with pytest.raises(ValueError, match="timestamps must increase"):
        f(np.zeros((3, 2)), 1.0)
    with pytest.raises(ValueError, match=r"expected shape \(3, 2\)"):
        f(np.zeros((4, 2)), 2.0)
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroParams(min_cutoff=0.0)
    with pytest.raises(ValueError, match="fps"):
        smooth_track(np.zeros((3, 1, 2)), 0)
    with pytest.raises(ValueError, match=r"\(T, N, 2\)"):
        mean_motion(np.zeros((3, 2)))


def test_track_figures_known_values():
    track = np.zeros((3, 2, 2))
    track[1, :, 0] = 3.0
    track[2, :, 0] = 3.0
    track[2, :, 1] = 4.0
    assert mean_motion(track) == pytest.approx((3.0 + 4.0) / 2)
    assert mean_deviation(track, np.zeros_like(track)) == pytest.approx((0 + 3 + 5) / 3)
