"""Procedural per-vertex albedo for face models without an albedo model (ICT-FaceKit).

Synthetic subjects need a plausible skin colour map so that rendered faces look like faces to a
real landmark detector and so that photometric fitting has a ground-truth albedo to recover. The
map is built from a sampled skin tone and soft regions derived from the geometry of the neutral
mesh around the 68 landmark vertices (lips inside the outer lip contour, brows along the brow
landmarks, cheeks around a point between eye, nose wing and jaw, a darker jaw/neck below the
jawline, scalp hair above a hairline), plus low-frequency blotchiness. Non-skin parts of the ICT
mesh (eyeballs, teeth, mouth interior, eyelashes) get their own colours when the model has those
regions.

Everything is per vertex in the model's vertex order, values in [0, 1], deterministic given a
``numpy.random.Generator``.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from core.face_model.model import MorphableModel

__all__ = ["sample_skin_tone", "landmark_region_weights", "hair_weight", "SkinAlbedoSampler",
           "procedural_albedo"]

# Skin tones from light to dark (RGB albedo); a subject's tone interpolates between neighbours.
_SKIN_TONES = np.array([
    [0.87, 0.70, 0.60],
    [0.80, 0.60, 0.49],
    [0.70, 0.50, 0.38],
    [0.56, 0.38, 0.27],
    [0.40, 0.26, 0.18],
    [0.30, 0.19, 0.13],
])
_HAIR_COLOURS = np.array([
    [0.10, 0.07, 0.05],
    [0.22, 0.14, 0.09],
    [0.35, 0.24, 0.15],
    [0.55, 0.42, 0.28],
])
_IRIS_COLOURS = np.array([
    [0.28, 0.16, 0.08],
    [0.42, 0.28, 0.14],
    [0.30, 0.42, 0.55],
    [0.35, 0.42, 0.28],
])
# Fixed colours of the non-skin parts of the ICT mesh, by region name.
_PART_COLOURS = {
    "teeth": (0.70, 0.66, 0.58),
    "gums_and_tongue": (0.68, 0.30, 0.30),
    "mouth_socket": (0.32, 0.10, 0.10),
}
_BALD_PROBABILITY = 0.15
_SCLERA = np.array([0.86, 0.82, 0.80])
_PUPIL = np.array([0.03, 0.03, 0.03])
_IRIS_RADIUS_MM = 5.9
_PUPIL_RADIUS_MM = 2.3


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def sample_skin_tone(rng: np.random.Generator) -> np.ndarray:
    """A skin albedo colour (3,) in [0, 1], from light to dark, with a small hue jitter."""
    t = rng.uniform(0.0, len(_SKIN_TONES) - 1)
    i = min(int(t), len(_SKIN_TONES) - 2)
    tone = (1 - (t - i)) * _SKIN_TONES[i] + (t - i) * _SKIN_TONES[i + 1]
    tone = tone * rng.uniform(0.96, 1.04, size=3)
    return np.clip(tone, 0.0, 1.0)


def _segment_distance(points: np.ndarray, polyline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of 2D points (N, 2) to an open polyline (K, 2), and the arc-length fraction
    in [0, 1] of the closest point along the polyline."""
    a, b = polyline[:-1], polyline[1:]                                  # (S, 2)
    ab = b - a
    length = np.linalg.norm(ab, axis=1)
    t = ((points[:, None] - a[None]) * ab[None]).sum(-1) / np.maximum(length ** 2, 1e-12)
    t = np.clip(t, 0.0, 1.0)                                            # (N, S)
    closest = a[None] + t[..., None] * ab[None]
    dist = np.linalg.norm(points[:, None] - closest, axis=-1)
    seg = dist.argmin(1)
    cumulative = np.concatenate([[0.0], np.cumsum(length)])
    arc = (cumulative[seg] + t[np.arange(len(points)), seg] * length[seg]) / cumulative[-1]
    return dist[np.arange(len(points)), seg], arc


def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: which 2D points (N, 2) lie inside a closed polygon (K, 2)."""
    a, b = polygon, np.roll(polygon, -1, axis=0)
    x, y = points[:, :1], points[:, 1:]
    crosses = (a[None, :, 1] > y) != (b[None, :, 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = a[None, :, 0] + (y - a[None, :, 1]) * (b[None, :, 0] - a[None, :, 0]) / \
            (b[None, :, 1] - a[None, :, 1])
    return ((crosses & (x < x_cross)).sum(1) % 2) == 1


def hair_weight(neutral: np.ndarray, landmarks: np.ndarray, forehead_mm: float = 55.0
                ) -> np.ndarray:
    """Soft mask (V,) in [0, 1] of scalp hair: above a hairline that runs around the head.

    The hairline height is interpolated over the azimuth around the vertical axis (0 = front):
    ``forehead_mm`` above the brows at the front, down to the temples and sideburns, above the
    ears, and down to the nape at the back.

    Args:
        neutral: (V, 3) vertices in mm, object space.
        landmarks: (68, 3) the landmark vertices of that mesh.
        forehead_mm: height of the front hairline above the highest brow landmark.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    brow_top = lm[17:27, 1].max()
    centre_z = lm[27:31, 2].mean() - 100.0                       # roughly the head's centre
    azimuth = np.degrees(np.abs(np.arctan2(neutral[:, 0], neutral[:, 2] - centre_z)))
    front = brow_top + forehead_mm
    key_azimuth = [0.0, 30.0, 55.0, 75.0, 90.0, 100.0, 125.0, 145.0, 180.0]
    key_height = [front, front - 5.0, brow_top + 10.0, brow_top - 35.0, brow_top - 35.0,
                  brow_top - 15.0, brow_top - 15.0, brow_top - 60.0, brow_top - 100.0]
    hairline = np.interp(azimuth, key_azimuth, key_height)
    return _sigmoid((neutral[:, 1] - hairline) / 2.5)


def landmark_region_weights(neutral: np.ndarray, landmarks: np.ndarray) -> Dict[str, np.ndarray]:
    """Soft masks in [0, 1] of facial regions, from the neutral mesh and its 68 landmarks.

    Regions are found in the frontal projection (x, y) of the front of the face (vertices not far
    behind the landmark they are matched to), with smooth millimetre-scale falloffs:

    - ``lips``: inside the outer lip contour (landmarks 48-59).
    - ``brows``: a band along each brow (17-21, 22-26), thicker at the inner end.
    - ``cheeks``: a blob centred between the lower eyelid, the nose wing and the jaw.
    - ``jaw_neck``: below the jawline (0-16) and the neck.

    Args:
        neutral: (V, 3) vertices in mm, object space (+y up, +z towards the viewer).
        landmarks: (68, 3) the landmark vertices of that mesh.

    Returns:
        dict region name -> (V,) float64 weights.
    """
    neutral = np.asarray(neutral, dtype=np.float64)
    lm = np.asarray(landmarks, dtype=np.float64)
    if neutral.ndim != 2 or neutral.shape[1] != 3:
        raise ValueError(f"neutral: expected shape (V, 3), got {neutral.shape}")
    if lm.shape != (68, 3):
        raise ValueError(f"landmarks: expected shape (68, 3), got {lm.shape}")
    xy, z = neutral[:, :2], neutral[:, 2]

    def front_of(depth: float, margin: float) -> np.ndarray:
        return _sigmoid((z - (depth - margin)) / 2.0)

    weights: Dict[str, np.ndarray] = {}

    lip_contour = lm[48:60, :2]
    lip_dist, _ = _segment_distance(xy, np.vstack([lip_contour, lip_contour[:1]]))
    signed = np.where(_inside_polygon(xy, lip_contour), -lip_dist, lip_dist)
    weights["lips"] = _sigmoid(-(signed + 0.3) / 0.6) * front_of(lm[48:60, 2].min(), 12.0)

    brows = np.zeros(len(neutral))
    for ids in (list(range(17, 22)), list(range(22, 27))):
        line = lm[ids, :2] - np.array([0.0, 2.0])        # band centre just below the points
        dist, arc = _segment_distance(xy, line)
        inner_end = arc if abs(line[-1, 0]) < abs(line[0, 0]) else 1.0 - arc
        half_width = 2.2 + 2.8 * inner_end                        # mm: thick inside, thin tail
        brows = np.maximum(brows, _sigmoid((half_width - dist) / 0.8)
                           * front_of(lm[ids, 2].min(), 10.0))
    weights["brows"] = brows

    cheeks = np.zeros(len(neutral))
    for eye, wing, jaw in ((41, 31, 2), (46, 35, 14)):
        centre = (lm[eye] + lm[wing] + lm[jaw]) / 3.0
        d2 = ((xy - centre[:2]) ** 2).sum(1)
        cheeks = np.maximum(cheeks, np.exp(-d2 / (2 * 13.0 ** 2))
                            * front_of(min(lm[eye, 2], lm[jaw, 2]), 10.0))
    weights["cheeks"] = cheeks * (1.0 - weights["lips"])

    jaw = lm[0:17]
    order = np.argsort(jaw[:, 0])
    x_clamped = np.clip(xy[:, 0], jaw[order, 0][0], jaw[order, 0][-1])
    jaw_y = np.interp(x_clamped, jaw[order, 0], jaw[order, 1])
    weights["jaw_neck"] = _sigmoid((jaw_y - 4.0 - xy[:, 1]) / 6.0)
    return weights


def _smooth_noise(points: np.ndarray, rng: np.random.Generator, n_waves: int = 8,
                  wavelength: tuple[float, float] = (25.0, 90.0)) -> np.ndarray:
    """Low-frequency noise over 3D points (V, 3) -> (V,), roughly unit variance."""
    directions = rng.normal(size=(n_waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    k = 2 * np.pi / rng.uniform(*wavelength, size=n_waves)
    phase = rng.uniform(0, 2 * np.pi, size=n_waves)
    # Reduced to [0, 2 pi) and float32: numpy's vectorised float32 cosine is many times faster
    # than float64's, and both are slow on large arguments.
    angle = np.mod(points @ (directions * k[:, None]).T + phase, 2 * np.pi).astype(np.float32)
    return np.sqrt(2.0 / n_waves) * np.cos(angle).sum(1, dtype=np.float64)


def _eye_colours(points: np.ndarray, iris: np.ndarray) -> np.ndarray:
    """Sclera, iris (darker at the limbus) and pupil by distance from the eye's front axis."""
    centre = 0.5 * (points.min(0) + points.max(0))
    radial = np.linalg.norm(points[:, :2] - centre[:2], axis=1)
    front = points[:, 2] > centre[2]
    limbus = _sigmoid((radial - (_IRIS_RADIUS_MM - 1.0)) / 0.4)
    iris_colour = iris[None] * (1.0 - 0.5 * limbus[:, None])
    colours = np.where((front & (radial < _IRIS_RADIUS_MM))[:, None], iris_colour, _SCLERA[None])
    return np.where((front & (radial < _PUPIL_RADIUS_MM))[:, None], _PUPIL[None], colours)


class SkinAlbedoSampler:
    """Draws random procedural albedos for one model (see `procedural_albedo`).

    The geometry-derived region masks are computed once here, so drawing many subjects of the
    same model is cheap.
    """

    def __init__(self, model: MorphableModel) -> None:
        if model.landmark_indices is None or len(model.landmark_indices) != 68:
            raise ValueError(f"model {model.name}: procedural albedo needs 68 landmark_indices")
        self._dtype, self._device = model.dtype, model.device
        self._neutral = model.neutral.detach().cpu().double().numpy()
        self._landmarks = self._neutral[model.landmark_indices.cpu().numpy()]
        self._weights = landmark_region_weights(self._neutral, self._landmarks)
        nose_tip = self._landmarks[30]
        self._nose = np.exp(-((self._neutral - nose_tip) ** 2).sum(1) / (2 * 10.0 ** 2))
        self._regions = {name: ids.cpu().numpy() for name, ids in model.regions.items()
                         if len(ids)}

    def __call__(self, rng: np.random.Generator, skin_tone: np.ndarray | None = None
                 ) -> torch.Tensor:
        """One random albedo (V, 3) in [0, 1]; ``skin_tone`` (3,) fixes the base skin colour."""
        neutral, w = self._neutral, self._weights
        tone = sample_skin_tone(rng) if skin_tone is None else \
            np.asarray(skin_tone, dtype=np.float64)
        if tone.shape != (3,):
            raise ValueError(f"skin_tone: expected shape (3,), got {tone.shape}")
        # Light hair only with light skin: darker tones draw from the two darkest hair colours.
        n_hair = len(_HAIR_COLOURS) if tone.mean() > 0.5 else 2
        hair = _HAIR_COLOURS[rng.integers(n_hair)] * rng.uniform(0.85, 1.15)
        iris = _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))] * rng.uniform(0.8, 1.2)
        lip_tint = np.array([0.98, 0.62, 0.66]) * rng.uniform(0.88, 1.0)
        cheek_tint = np.array([1.03, 0.86, 0.86])
        hair_amount = 0.0 if rng.random() < _BALD_PROBABILITY else rng.uniform(0.85, 1.0)
        scalp = hair_weight(neutral, self._landmarks, rng.uniform(48.0, 66.0))

        skin = np.repeat(tone[None], len(neutral), axis=0)
        skin *= 1.0 + 0.035 * _smooth_noise(neutral, rng)[:, None]
        skin *= 1.0 + 0.012 * _smooth_noise(neutral, rng)[:, None] * np.array([1.0, -0.5, -0.5])
        blush = rng.uniform(0.3, 0.8) * w["cheeks"] + 0.3 * self._nose
        skin *= 1.0 + blush[:, None] * (cheek_tint - 1.0)
        skin *= 1.0 - rng.uniform(0.06, 0.14) * w["jaw_neck"][:, None]
        skin += w["lips"][:, None] * (skin * lip_tint - skin)
        brow_colour = np.minimum(hair, 0.5 * tone)               # brows darker than the skin
        skin += (rng.uniform(0.55, 0.85) * w["brows"])[:, None] * (brow_colour[None] - skin)
        texture = 1.0 + 0.15 * _smooth_noise(neutral, rng, 12, (4.0, 15.0))
        skin += (hair_amount * scalp)[:, None] * (hair[None] * texture[:, None] - skin)

        for part, colour in (*_PART_COLOURS.items(), ("eyelashes", brow_colour)):
            if part in self._regions:
                skin[self._regions[part]] = colour
        for side in ("eye_socket_left", "eye_socket_right"):
            if side in self._regions:
                skin[self._regions[side]] *= np.array([0.85, 0.62, 0.62])
        for side in ("eyeball_left", "eyeball_right"):
            if side in self._regions:
                ids = self._regions[side]
                skin[ids] = _eye_colours(neutral[ids], iris)
        return torch.as_tensor(np.clip(skin, 0.0, 1.0), dtype=self._dtype, device=self._device)


def procedural_albedo(model: MorphableModel, rng: np.random.Generator,
                      skin_tone: np.ndarray | None = None) -> torch.Tensor:
    """A random, plausible per-vertex albedo for a model without an albedo basis.

    Skin (sampled tone, or ``skin_tone``) with redder lips, darker brows, pinker cheeks and nose,
    a slightly darker jaw and neck, mild blotchiness and (mostly) scalp hair; eyeballs, teeth,
    mouth interior and eyelashes coloured by region where the model has them (the full ICT
    model). Use `SkinAlbedoSampler` to draw many albedos of one model.

    Args:
        model: a face model with 68 ``landmark_indices``.
        rng: the random generator (the result is deterministic given its state).
        skin_tone: optional (3,) base skin colour in [0, 1].

    Shape:
        - output: (V, 3) in [0, 1], the model's dtype.
    """
    return SkinAlbedoSampler(model)(rng, skin_tone)
