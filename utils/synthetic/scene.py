"""Random scene parameters for synthetic faces: expressions, head pose, SH lighting, backgrounds.

Each sampler takes a ``numpy.random.Generator`` and is deterministic given its state, so that a
synthetic data set is reproducible from one seed (see `utils.synthetic`).

- Expressions for ICT-like blendshape models (weights in [0, 1], ARKit-like names) mix a small
  library of named recipes (smile, surprise, frown, blink, pucker, ...) with sparse random weights
  whose ``_L`` / ``_R`` pairs mostly move together; PCA expression models (BFM) get N(0, 1) draws.
- Head pose: Euler angles ``(pitch, yaw, roll)`` in radians (docs/conventions.md), truncated-normal
  around frontal within given limits.
- Lighting: second-order SH (9 x 3) with a dominant ambient term, a directional first band and a
  mild second band, scaled so that the irradiance stays positive for every normal.
- Backgrounds: colour gradients, value-noise textures and blurred procedural "scenes" of shapes
  and stripes; no external data.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from core.lighting import SH_CONSTANT, sh_basis

__all__ = [
    "EXPRESSION_RECIPES",
    "sample_expression",
    "sample_pose",
    "sample_sh",
    "sh_irradiance_range",
    "expose",
    "sample_background",
    "BACKGROUND_KINDS",
]

# Named ARKit-like expression recipes (blendshape -> weight at full intensity).
EXPRESSION_RECIPES: Dict[str, Dict[str, float]] = {
    "smile": {"mouthSmile_L": 0.8, "mouthSmile_R": 0.8, "cheekSquint_L": 0.4,
              "cheekSquint_R": 0.4, "eyeSquint_L": 0.2, "eyeSquint_R": 0.2},
    "laugh": {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0, "jawOpen": 0.35, "cheekSquint_L": 0.6,
              "cheekSquint_R": 0.6, "eyeSquint_L": 0.4, "eyeSquint_R": 0.4,
              "mouthUpperUp_L": 0.3, "mouthUpperUp_R": 0.3},
    "smirk": {"mouthSmile_L": 0.8, "mouthLeft": 0.3, "cheekSquint_L": 0.3},
    "open_mouth": {"jawOpen": 0.7, "mouthLowerDown_L": 0.3, "mouthLowerDown_R": 0.3},
    "surprise": {"browInnerUp_L": 0.9, "browInnerUp_R": 0.9, "browOuterUp_L": 0.8,
                 "browOuterUp_R": 0.8, "eyeWide_L": 0.6, "eyeWide_R": 0.6, "jawOpen": 0.5,
                 "mouthFunnel": 0.2},
    "brows_up": {"browInnerUp_L": 0.8, "browInnerUp_R": 0.8, "browOuterUp_L": 0.7,
                 "browOuterUp_R": 0.7},
    "frown": {"browDown_L": 0.8, "browDown_R": 0.8, "mouthFrown_L": 0.7, "mouthFrown_R": 0.7,
              "mouthShrugLower": 0.3},
    "sad": {"browInnerUp_L": 0.7, "browInnerUp_R": 0.7, "mouthFrown_L": 0.6,
            "mouthFrown_R": 0.6, "mouthShrugLower": 0.3},
    "angry": {"browDown_L": 1.0, "browDown_R": 1.0, "noseSneer_L": 0.5, "noseSneer_R": 0.5,
              "eyeSquint_L": 0.4, "eyeSquint_R": 0.4, "mouthPress_L": 0.4, "mouthPress_R": 0.4},
    "disgust": {"noseSneer_L": 0.8, "noseSneer_R": 0.8, "mouthUpperUp_L": 0.6,
                "mouthUpperUp_R": 0.6, "browDown_L": 0.4, "browDown_R": 0.4},
    "blink": {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0},
    "wink": {"eyeBlink_L": 1.0, "cheekSquint_L": 0.3, "mouthSmile_L": 0.3},
    "squint": {"eyeSquint_L": 0.8, "eyeSquint_R": 0.8, "cheekSquint_L": 0.4,
               "cheekSquint_R": 0.4, "browDown_L": 0.3, "browDown_R": 0.3},
    "pucker": {"mouthPucker": 0.9},
    "oh": {"mouthFunnel": 0.7, "jawOpen": 0.3},
    "cheek_puff": {"cheekPuff_L": 0.8, "cheekPuff_R": 0.8},
    "jaw_side": {"jawLeft": 0.5, "mouthLeft": 0.2},
    "lips_pressed": {"mouthRollLower": 0.6, "mouthRollUpper": 0.6, "mouthPress_L": 0.5,
                     "mouthPress_R": 0.5},
    "grimace": {"mouthStretch_L": 0.8, "mouthStretch_R": 0.8, "mouthDimple_L": 0.4,
                "mouthDimple_R": 0.4, "jawOpen": 0.15},
    "ee": {"mouthStretch_L": 0.5, "mouthStretch_R": 0.5, "mouthSmile_L": 0.3,
           "mouthSmile_R": 0.3, "jawOpen": 0.2},
}

# Left/right swaps used to mirror asymmetric recipes (wink, smirk, jaw_side) half of the time.
_MIRROR_WORDS = (("_L", "_R"), ("Left", "Right"))
# Gaze blendshapes: moved together for both eyes, never part of the sparse random extras.
_GAZE_PREFIX = "eyeLook"
# Never a random extra: ARKit's mouthClose only makes sense on top of jawOpen.
_NOT_EXTRAS = ("mouthClose",)

_BAND1 = (2.0 * math.pi / 3.0) * math.sqrt(3.0 / (4.0 * math.pi))  # A_1 Y_1: n . l -> SH

BACKGROUND_KINDS = ("gradient", "noise", "shapes", "stripes")


def _mirror(name: str) -> str:
    for a, b in _MIRROR_WORDS:
        if name.endswith(a):
            return name[: -len(a)] + b
        if name.endswith(b):
            return name[: -len(b)] + a
    return name


def _pair_groups(names: Sequence[str]) -> List[List[int]]:
    """Indices of the components that random extras may move, grouped into symmetric _L/_R
    pairs (or singletons)."""
    index = {n: i for i, n in enumerate(names)}
    groups, seen = [], set()
    for i, name in enumerate(names):
        if i in seen or name.startswith(_GAZE_PREFIX) or name in _NOT_EXTRAS:
            continue
        other = index.get(_mirror(name)) if name.endswith(("_L", "_R")) else None
        group = [i] if other is None or other == i else [i, other]
        seen.update(group)
        groups.append(group)
    return groups


def _gaze(names: Sequence[str], rng: np.random.Generator) -> Dict[str, float]:
    """A shared gaze direction for both eyes as eyeLook* weights (empty when absent)."""
    index = set(names)
    horizontal, vertical = rng.uniform(-0.4, 0.4), rng.uniform(-0.3, 0.3)
    out: Dict[str, float] = {}
    # Looking to the subject's left: left eye looks out, right eye looks in.
    side_l, side_r = ("Out", "In") if horizontal > 0 else ("In", "Out")
    up_down = "Up" if vertical > 0 else "Down"
    for name, value in ((f"eyeLook{side_l}_L", abs(horizontal)),
                        (f"eyeLook{side_r}_R", abs(horizontal)),
                        (f"eyeLook{up_down}_L", abs(vertical)),
                        (f"eyeLook{up_down}_R", abs(vertical))):
        if name in index:
            out[name] = value
    return out


def sample_expression(names: Sequence[str], rng: np.random.Generator,
                      bounded: bool = True, neutral_probability: float = 0.15,
                      extras_mean: float = 1.5) -> Tuple[np.ndarray, str]:
    """Random plausible expression coefficients and a label naming how they were made.

    Args:
        names: the model's expression component names (ARKit-like for ICT).
        rng: random generator.
        bounded: True for blendshape weights in [0, 1] (ICT): a mix of one or two recipes at
            random intensity, plus ``Poisson(extras_mean)`` sparse random components (pairs
            _L/_R move together 80% of the time) and a small shared gaze. False for PCA
            coefficients ~ N(0, 1) (BFM): a Gaussian draw at a random overall intensity.
        neutral_probability: chance of an (almost) neutral face: zero weights but the gaze.

    Returns:
        (weights (n,) float64, label) where label is e.g. ``"smile+blink"``, ``"neutral"``,
        ``"random"`` (no recipe applies) or ``"gaussian"`` (unbounded models).
    """
    n = len(names)
    if not bounded:
        if rng.random() < neutral_probability:
            return np.zeros(n), "neutral"
        return rng.normal(size=n) * rng.uniform(0.3, 1.0), "gaussian"

    index = {name: i for i, name in enumerate(names)}
    weights = np.zeros(n)
    for name, value in _gaze(names, rng).items():
        weights[index[name]] = value
    if rng.random() < neutral_probability:
        return weights, "neutral"

    usable = [r for r, recipe in EXPRESSION_RECIPES.items() if any(k in index for k in recipe)]
    labels = []
    if usable:
        n_recipes = 1 if rng.random() < 0.7 else 2
        for r in rng.choice(usable, size=min(n_recipes, len(usable)), replace=False):
            intensity = rng.uniform(0.4, 1.0)
            mirror = rng.random() < 0.5
            for name, value in EXPRESSION_RECIPES[str(r)].items():
                name = _mirror(name) if mirror else name
                if name in index:
                    weights[index[name]] = max(weights[index[name]], intensity * value)
            labels.append(str(r))

    groups = _pair_groups(names)
    n_extras = min(int(rng.poisson(extras_mean)), len(groups))
    for g in rng.choice(len(groups), size=n_extras, replace=False):
        group = groups[int(g)]
        value = rng.uniform(0.0, 0.35)
        if len(group) == 2 and rng.random() < 0.8:
            for i in group:
                weights[i] += value + rng.normal(0.0, 0.03)
        else:
            weights[group[int(rng.integers(len(group)))]] += value
    return np.clip(weights, 0.0, 1.0), "+".join(labels) if labels else "random"


def sample_pose(rng: np.random.Generator, limits: Tuple[float, float, float],
                spread: float = 0.5) -> np.ndarray:
    """Euler angles ``(pitch, yaw, roll)`` in radians, truncated-normal within ``+-limits``.

    Args:
        limits: maximum absolute (pitch, yaw, roll) in radians.
        spread: standard deviation as a fraction of each limit (large values approach uniform).

    Returns:
        (3,) float64.
    """
    limits_arr = np.asarray(limits, dtype=np.float64)
    if limits_arr.shape != (3,) or (limits_arr < 0).any():
        raise ValueError(f"limits: expected three non-negative angles, got {limits}")
    if spread <= 0:
        raise ValueError(f"spread: expected a positive fraction, got {spread}")
    angles = np.empty(3)
    for k in range(3):
        while True:
            value = rng.normal(0.0, spread)
            if abs(value) <= 1.0:
                break
        angles[k] = value * limits_arr[k]
    return angles


def _sphere_normals(n: int = 256) -> np.ndarray:
    """Roughly uniform unit vectors (Fibonacci sphere), (n, 3)."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    r = np.sqrt(1.0 - z * z)
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


# The SH irradiance basis of core.lighting at those normals, (256, 9).
_SPHERE_BASIS = sh_basis(torch.as_tensor(_sphere_normals(), dtype=torch.float64)[None])[0].numpy()


_FRONTAL_BASIS = sh_basis(torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64))[0, 0].numpy()


def sh_irradiance_range(sh: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel (min, max) irradiance of SH lighting (9, C) over all unit normals."""
    irradiance = _SPHERE_BASIS @ np.asarray(sh, dtype=np.float64)
    return irradiance.min(0), irradiance.max(0)


def sample_sh(rng: np.random.Generator, ambient: Tuple[float, float] = (0.55, 0.85),
              directional: Tuple[float, float] = (0.2, 0.6), second_band: float = 0.08,
              tint: float = 0.08, min_fraction: float = 0.15) -> np.ndarray:
    """Random SH lighting (9, 3): ambient + a directional light from the front + mild 2nd band.

    The constant band gives an irradiance ``ambient`` for every normal, the first band adds
    ``directional * (n . l)`` for a light direction ``l`` in camera space (from the front
    hemisphere, mostly from above), the second band random terms of relative size
    ``second_band``; channels get a colour tint of +-``tint``. The non-constant bands are scaled
    down where needed so that every normal's irradiance is at least ``min_fraction * ambient``.
    """
    level = rng.uniform(*ambient)
    strength = rng.uniform(*directional)
    light = np.array([rng.uniform(-1.0, 1.0), rng.uniform(-0.3, 1.0), rng.uniform(0.4, 1.2)])
    light /= np.linalg.norm(light)
    sh = np.zeros((9, 1))
    sh[0] = level / SH_CONSTANT
    sh[1:4, 0] = strength / _BAND1 * light[[1, 2, 0]]
    sh[4:, 0] = rng.normal(0.0, second_band * level / SH_CONSTANT, size=5)
    low, _ = sh_irradiance_range(sh)
    floor = min_fraction * level
    if low[0] < floor:
        # irradiance(n) = level + f(n) with f linear in the non-constant bands: scale f.
        sh[1:] *= (level - floor) / (level - low[0])
    colour = 1.0 + rng.uniform(-tint, tint, size=3)
    return sh * (colour / colour.mean())[None]


def expose(sh: np.ndarray, albedo_luminance: float, target: float) -> np.ndarray:
    """Scale SH lighting (9, 3) like a camera's auto-exposure: a frontal surface of the given
    albedo luminance comes out at ``target`` brightness (factor clipped to [0.6, 3])."""
    frontal = float((_FRONTAL_BASIS @ np.asarray(sh, dtype=np.float64)).mean())
    gain = target / max(albedo_luminance * frontal, 1e-6)
    return sh * float(np.clip(gain, 0.6, 3.0))


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """An RGB colour in [0, 1] with moderate saturation (HSV sampled)."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 160), rng.uniform(40, 240)]]],
                   dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64) / 255.0


def _value_noise(rng: np.random.Generator, size: int, octaves: int = 4) -> np.ndarray:
    """Fractal value noise (size, size) in [0, 1]: random grids upsampled and summed."""
    total = np.zeros((size, size))
    amplitude, weight = 1.0, 0.0
    for k in range(octaves):
        cells = 2 ** (k + 2)
        grid = rng.random((cells, cells)).astype(np.float32)
        total += amplitude * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        weight += amplitude
        amplitude *= 0.5
    total /= weight
    return (total - total.min()) / max(float(total.max() - total.min()), 1e-6)


def sample_background(rng: np.random.Generator, size: int, kind: Optional[str] = None
                      ) -> Tuple[np.ndarray, str]:
    """A random background image (size, size, 3) uint8 RGB and its kind.

    Kinds: ``"gradient"`` (two colours along a random direction), ``"noise"`` (value noise
    between two colours), ``"shapes"`` (random rectangles, ellipses and lines, blurred as an
    out-of-focus room), ``"stripes"`` (blurred sinusoidal stripes). All get a little pixel noise.
    """
    kind = str(rng.choice(BACKGROUND_KINDS)) if kind is None else kind
    if kind not in BACKGROUND_KINDS:
        raise ValueError(f"kind: expected one of {BACKGROUND_KINDS}, got {kind!r}")
    rows, cols = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    a, b = _random_colour(rng), _random_colour(rng)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        t = (np.cos(angle) * cols + np.sin(angle) * rows)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        image = a + t[..., None] * (b - a)
    elif kind == "noise":
        image = a + _value_noise(rng, size)[..., None] * (b - a)
    elif kind == "stripes":
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(0.05, 0.4)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * (np.cos(angle) * cols + np.sin(angle) * rows)
                               / period)
        image = cv2.GaussianBlur(a + t[..., None] * (b - a), (0, 0), rng.uniform(1.0, 4.0))
    else:
        canvas = np.ascontiguousarray(np.broadcast_to(a, (size, size, 3)) * 255.0)
        for _ in range(int(rng.integers(6, 20))):
            colour = tuple(float(c) for c in _random_colour(rng) * 255.0)
            x0, y0 = (int(v) for v in rng.integers(-size // 4, size, size=2))
            w, h = (int(v) for v in rng.integers(size // 10, size // 2, size=2))
            shape = rng.integers(3)
            if shape == 0:
                cv2.rectangle(canvas, (x0, y0), (x0 + w, y0 + h), colour, -1)
            elif shape == 1:
                cv2.ellipse(canvas, (x0, y0), (w // 2, h // 2), float(rng.uniform(0, 180)), 0,
                            360, colour, -1)
            else:
                cv2.line(canvas, (x0, y0), (x0 + w, y0 + h), colour,
                         int(rng.integers(2, max(3, size // 25))))
        image = cv2.GaussianBlur(canvas / 255.0, (0, 0), rng.uniform(1.5, 6.0))
    image = image + rng.normal(0.0, 0.01, size=image.shape)
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8), kind
