"""How far a landmark detector's 68 points stray from the true ones, per point, and the weights that follow.

Detectors are not equally sure of every point: dlib places the eye corners within ~2 % of the
eye distance but the jawline, which it has to guess on the silhouette, at 4-9 % (robust spread
on the synthetic renders, `calibrate_landmarks.py`). A fitter that weights all 68 points alike
lets the jawline's errors pull the face's shape and pose; weighting each point by its inverse
variance (relative to the typical inner point, so the fitter's overall noise setting still
applies) follows the detector's actual error.

The spread is measured where the truth is known: on synthetic renders, detections minus the
projected model landmarks at the true geometry, per point, robustly (median absolute deviation,
so a few wrong detections do not inflate it), in units of the eye distance (outer corners, 36-45).

The renders are harder on the jawline than photos are (no cast shadow under the jaw, a neck of
the same skin): full inverse-variance weights (power 2) took the synthetic dlib rigs from 1.68 to
1.22 of the mean face's error but made rigs from real video frames less consistent (0.32 -> 0.35
of the between-person difference, target 0.33), so the point-to-point contrast is trusted on
photos only as ``(reference / sigma) ** PHOTO_POWER`` (0.5: the jawline at ~0.6 of the inner points).

The profile also says how noisy the detector is overall: dlib's typical inner point strays
~0.024 eye distances, ~3 px in a 256 px crop, where the rig builder's defaults were chosen for
landmarks 1.5 px off (`REFERENCE_PX`, the benchmark's ground truth + noise). `detector_weights`
therefore scales each image's weights by ``(REFERENCE_PX / inner spread in pixels) ** 2`` (about
0.26 for dlib): the priors count for more against a noisier detector, as they should (the
shading term keeps its balance with the landmarks, `core.fitting.shading_refine.ShadingConfig.weight`).
Together: synthetic dlib rigs 1.68 -> 1.22 of the mean face, real-video consistency 0.32 -> 0.27
with the session-4 rig builder (docs/benchmarks.md, rig building).

Files (``.npz``): ``sigma`` (68,) float, ``detector`` (str).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from utils.paths import NET_WEIGHTS_DIR

__all__ = ["PHOTO_POWER", "REFERENCE_PX", "LandmarkNoiseError", "landmark_spread", "relative_confidence",
           "save_landmark_noise", "load_landmark_noise", "noise_path", "detector_weights"]

_MAD_TO_STD = 1.4826
INNER = slice(17, 68)  # the 51 points off the jawline
PHOTO_POWER = 0.5  # exponent of the point-to-point contrast the pipelines use (module docstring)
REFERENCE_PX = 1.5  # landmark noise (crop pixels) the rig builder's defaults were chosen for


class LandmarkNoiseError(ValueError):
    """A landmark noise file is missing or malformed (the message names the file)."""


def noise_path(detector: str) -> Path:
    """Where the project ships the noise profile of ``detector`` (``net_weights/``; may not exist)."""
    return NET_WEIGHTS_DIR / f"landmark_noise_{detector}.npz"


def landmark_spread(residuals: Tensor, eye_distance: Tensor, points: int = 68) -> Tensor:
    """Robust per-point standard deviation of detection errors, in eye distances.

    Per point and axis: 1.4826 x the median absolute deviation from the median (the standard
    deviation for Gaussian errors, unmoved by a minority of wild detections); the two axes are
    combined as their root mean square (the per-axis sigma of an isotropic error). ``points``
    is the detector's point count (68 for iBUG; 478 for MediaPipe's mesh).

    Shape:
        residuals (N, P, 2) detected minus true, pixels; eye_distance (N,) pixels -> (P,),
        P = ``points``.
    """
    n = residuals.shape[0]
    if residuals.shape != (n, points, 2) or eye_distance.shape != (n,) or n < 2:
        raise ValueError(f"landmark_spread: expected residuals (N, {points}, 2) and eye_distance (N,) with "
                         f"N >= 2, got {tuple(residuals.shape)} and {tuple(eye_distance.shape)}")
    rel = residuals / eye_distance[:, None, None]
    mad = (rel - rel.median(0).values).abs().median(0).values  # (68, 2)
    return (_MAD_TO_STD * mad).pow(2).mean(-1).sqrt()


def relative_confidence(sigma: Tensor, reference: Optional[float] = None, power: float = 2.0) -> Tensor:
    """Landmark weights ``min(1, reference / sigma) ** power`` (power 2: inverse variance, capped at 1).

    ``reference`` defaults to the median spread of the 51 inner points, so a typical inner point
    keeps weight 1 and the fitter's ``landmark_sigma`` still says how noisy that is.

    Shape: sigma (68,) -> (68,).
    """
    if sigma.shape != (68,) or not bool((sigma > 0).all()):
        raise ValueError(f"relative_confidence: expected 68 positive spreads, got shape {tuple(sigma.shape)}")
    ref = float(sigma[INNER].median()) if reference is None else float(reference)
    return (ref / sigma).clamp(max=1.0) ** power


def save_landmark_noise(path: Union[str, Path], sigma: Tensor, detector: str) -> Path:
    """Write a noise profile (module docstring); returns the path."""
    if tuple(sigma.shape) != (68,):
        raise ValueError(f"sigma must be (68,), got {tuple(sigma.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, sigma=sigma.detach().cpu().numpy().astype(np.float32), detector=np.array(detector))
    return path


def load_landmark_noise(path: Union[str, Path]) -> Tensor:
    """Read a noise profile: (68,) spreads in eye distances.

    Raises:
        LandmarkNoiseError: the file is missing, unreadable, or its ``sigma`` is not 68 positive
            finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise LandmarkNoiseError(f"{path}: landmark noise file not found (make it with calibrate_landmarks.py)")
    try:
        with np.load(path, allow_pickle=False) as data:
            sigma = data["sigma"] if "sigma" in data.files else None
    except (OSError, ValueError) as err:
        raise LandmarkNoiseError(f"{path}: not a readable landmark noise file (.npz): {err}") from err
    if sigma is None:
        raise LandmarkNoiseError(f"{path}: landmark noise file lacks 'sigma'")
    if sigma.shape != (68,) or not np.isfinite(sigma).all() or not (sigma > 0).all():
        raise LandmarkNoiseError(f"{path}: 'sigma' must be 68 positive finite values, got shape {sigma.shape}")
    return torch.as_tensor(sigma, dtype=torch.float32)


def detector_weights(detector: str, landmarks: Tensor, power: float = PHOTO_POWER,
                     reference_px: float = REFERENCE_PX) -> Optional[Tensor]:
    """Landmark weights for ``detector``'s detections from its shipped profile, or None without one.

    Per point ``min(1, inner / sigma) ** power`` (`relative_confidence`), per image times
    ``min(1, reference_px / (inner * eye distance in pixels)) ** 2`` (module docstring), with
    ``inner`` the median spread of the 51 inner points.

    Shape: landmarks (G, 68, 2) crop pixels -> (G, 68).
    """
    if landmarks.dim() != 3 or tuple(landmarks.shape[1:]) != (68, 2):
        raise ValueError(f"landmarks must be (G, 68, 2), got {tuple(landmarks.shape)}")
    path = noise_path(detector)
    if not path.is_file():
        return None
    sigma = load_landmark_noise(path)
    eye = (landmarks[:, 36] - landmarks[:, 45]).norm(dim=-1).to(sigma.dtype)
    overall = (reference_px / (float(sigma[INNER].median()) * eye.clamp(min=1e-6))).clamp(max=1.0) ** 2
    return overall[:, None] * relative_confidence(sigma, power=power)[None]
