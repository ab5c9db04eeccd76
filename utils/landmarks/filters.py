"""Temporal smoothing of landmark tracks: the One Euro filter, and the figures that judge it.

Per-frame landmarks jitter by a pixel or two even on a still face. The One Euro filter (Casiez,
Roussel, Vogel, CHI 2012) is a low-pass filter whose cutoff rises with the signal's speed: slow
motion is smoothed hard (no jitter), fast motion passes almost untouched (little lag).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroParams:
    """One Euro settings; defaults suit landmarks in pixels on 25-30 fps, ~500 px video.

    Attributes:
        min_cutoff: cutoff frequency (Hz) of a still signal; lower = smoother and laggier.
        beta: cutoff increase per unit of speed (per px/s for pixels); higher = less lag on fast
            motion.
        d_cutoff: cutoff frequency (Hz) of the speed estimate.
    """

    min_cutoff: float = 1.0
    beta: float = 0.3
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ValueError(f"OneEuroParams: need min_cutoff > 0, d_cutoff > 0, beta >= 0, got "
                             f"{self}")


def _smoothing_factor(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Exponential smoothing weight of the new sample for a first-order low-pass at ``cutoff``."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over (..., D) arrays of points: each point's cutoff follows its own speed.

    The last axis holds a point's coordinates (D = 2 for landmarks; D = 1 for scalar signals):
    the speed that raises the cutoff is the norm of the point's velocity, so a point moving
    diagonally is treated as one moving along an axis. Call the filter with each new sample and
    its time in seconds; the first sample passes unchanged. `reset` starts a new track (e.g.
    after a frame without a face).

    Example:
        >>> f = OneEuroFilter(OneEuroParams(min_cutoff=1.0, beta=0.0))
        >>> f(np.zeros((1, 2)), 0.0).tolist(), f(np.ones((1, 2)), 0.1).round(3).tolist()
        ([[0.0, 0.0]], [[0.386, 0.386]])
    """

    def __init__(self, params: OneEuroParams = OneEuroParams()) -> None:
        self.params = params
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next sample starts a new track."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter sample ``x`` taken at time ``t`` (seconds, strictly increasing); returns a copy."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 0:
            raise ValueError("x: expected an array of points (..., D), got a scalar")
        if self._x is None or self._t is None or self._dx is None:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        if x.shape != self._x.shape:
            raise ValueError(f"x: expected shape {self._x.shape} as the track's earlier samples, "
                             f"got {x.shape}")
        dt = float(t) - self._t
        if dt <= 0:
            raise ValueError(f"t: timestamps must increase, got {t} after {self._t}")
        p = self.params
        a_d = _smoothing_factor(p.d_cutoff, dt)
        self._dx = a_d * (x - self._x) / dt + (1.0 - a_d) * self._dx
        speed = np.linalg.norm(self._dx, axis=-1, keepdims=True)
        a = _smoothing_factor(p.min_cutoff + p.beta * speed, dt)
        self._x = a * x + (1.0 - a) * self._x
        self._t = float(t)
        return self._x.copy()


def smooth_track(track: np.ndarray, fps: float,
                 params: OneEuroParams = OneEuroParams()) -> np.ndarray:
    """One Euro filter a whole track sampled at ``fps``; NaN frames (no face) restart the filter.

    Shape:
        - track: (T, ...) e.g. (T, 68, 2)
        - output: same as track, NaN where the input frame has any NaN
    """
    if fps <= 0:
        raise ValueError(f"fps: must be positive, got {fps}")
    track = np.asarray(track, dtype=np.float64)
    out = np.full_like(track, np.nan)
    filt = OneEuroFilter(params)
    for i, sample in enumerate(track):
        if np.isnan(sample).any():
            filt.reset()
            continue
        out[i] = filt(sample, i / fps)
    return out


def _check_track(name: str, track: np.ndarray) -> np.ndarray:
    track = np.asarray(track, dtype=np.float64)
    if track.ndim != 3 or track.shape[-1] != 2:
        raise ValueError(f"{name}: expected shape (T, N, 2), got {track.shape}")
    return track


def mean_motion(track: np.ndarray) -> float:
    """Mean distance (px) a point moves between consecutive frames: jitter plus real motion.

    Frame pairs with a NaN frame are left out.

    Shape:
        - track: (T, N, 2)
    """
    track = _check_track("track", track)
    step = np.linalg.norm(np.diff(track, axis=0), axis=-1)
    return float(np.nanmean(step)) if np.isfinite(step).any() else float("nan")


def mean_deviation(track: np.ndarray, reference: np.ndarray) -> float:
    """Mean distance (px) between corresponding points of two tracks (e.g. filtered vs raw).

    Shape:
        - track: (T, N, 2)
        - reference: (T, N, 2)
    """
    track, reference = _check_track("track", track), _check_track("reference", reference)
    if track.shape != reference.shape:
        raise ValueError(f"reference: expected shape {track.shape} as track, got "
                         f"{reference.shape}")
    dist = np.linalg.norm(track - reference, axis=-1)
    return float(np.nanmean(dist)) if np.isfinite(dist).any() else float("nan")
