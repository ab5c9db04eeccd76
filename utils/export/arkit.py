"""ARKit blendshape names for the model's expressions, and the Live Link Face CSV.

Naming: a model name ending in ``_L`` / ``_R`` gets ``Left`` / ``Right`` (``eyeBlink_L`` ->
``eyeBlinkLeft``). Both the model (ICT-FaceKit: ``eyeBlink_L`` closes the eye on object +x, the
face's own left; docs/conventions.md) and ARKit name sides from the face's own point of view, so no
side is swapped; ``tests/test_export.py`` checks it on the ICT face. ARKit names without a side
(``browInnerUp``, ``cheekPuff``) that the model splits into halves (``browInnerUp_L`` /
``browInnerUp_R``) become one target: the halves' deltas summed (glTF) and their weights averaged
(animation, CSV), which reproduces the model's mesh exactly where both halves have the same weight.

Live Link Face CSV (the file the app records, one row per frame): ``Timecode`` as
``HH:MM:SS:FF.fff`` where ``FF`` is the frame within the second at the video's rate and ``.fff`` the
sub-frame fraction in thousandths of a frame (the app's recordings count ``07.867``, ``08.868``, ...
at 60 fps, so the part after the dot is a fraction of a frame, not milliseconds; ours is ``.000``
since every row is a whole frame), ``BlendShapeCount`` 61, the 52 weights in [0, 1], then head and
eye rotations in radians.

Rotation units and signs, from recordings made by the app (sources in benchmarks/README_exports.md):
eye yaw/pitch/roll reach about +-0.6 in range-of-motion takes, so radians (+-0.6 degrees would be no
eye movement). Eye pitch rises with ``EyeLookDown`` (positive = down, as our ``Rx(pitch)``); eye yaw
rises with the left eye's ``EyeLookIn`` and the right eye's ``EyeLookOut`` (positive = towards the
face's own right, the opposite of our ``Ry(yaw)``, which turns +z towards +x). That is our convention
seen in a frame with x mirrored, which flips yaw and roll and keeps pitch, so we write
``yaw_csv = -yaw``, ``pitch_csv = pitch``, ``roll_csv = -roll`` for the eyes and the head. The same
recordings hold ``HeadYaw``/``HeadPitch``/``HeadRoll`` at 0 throughout: the head's unit (radians,
like the eyes) and signs (the eyes' convention; roll inferred from the mirror) are not confirmed by
a recording.
"""
from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["LIVE_LINK_HEADER", "LIVE_LINK_SHAPES", "ARKIT_NAMES", "BLEND_SHAPE_COUNT", "NameStyle",
           "arkit_name", "TargetMapping", "target_mapping", "arkit_matrix", "to_arkit_weights",
           "live_link_timecode", "write_live_link_csv"]

NameStyle = Literal["arkit", "model"]

#: The Live Link Face CSV header, exactly as the app writes it (JawRight before JawLeft, MouthRight
#: before MouthLeft).
LIVE_LINK_HEADER: Tuple[str, ...] = tuple((
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,EyeLookUpLeft,"
    "EyeSquintLeft,EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,EyeLookOutRight,EyeLookUpRight,"
    "EyeSquintRight,EyeWideRight,JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,"
    "MouthRight,MouthLeft,MouthSmileLeft,MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,"
    "MouthDimpleRight,MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,"
    "MouthShrugUpper,MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,MouthUpperUpLeft,"
    "MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,BrowOuterUpRight,CheekPuff,"
    "CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,TongueOut,HeadYaw,HeadPitch,HeadRoll,"
    "LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll").split(","))
#: The 52 blendshape columns (PascalCase) in the CSV's order.
LIVE_LINK_SHAPES: Tuple[str, ...] = LIVE_LINK_HEADER[2:54]
#: The 52 ARKit blendshape names (lowerCamelCase, as ARKit and glTF tools name them), CSV order.
ARKIT_NAMES: Tuple[str, ...] = tuple(n[0].lower() + n[1:] for n in LIVE_LINK_SHAPES)
#: What the app writes in the BlendShapeCount column: 52 shapes + 9 rotations.
BLEND_SHAPE_COUNT = 61
_SIDES = (("_L", "Left"), ("_R", "Right"))
#: Our (yaw, pitch, roll) -> the app's: x mirrored (see the module docstring).
_APP_SIGNS = np.array([-1.0, 1.0, -1.0])
_ARKIT_SET = frozenset(ARKIT_NAMES)


def arkit_name(name: str) -> str:
    """The ARKit spelling of a model expression name: ``_L`` -> ``Left``, ``_R`` -> ``Right``.

    A split half of an unsided ARKit shape maps to that shape (``browInnerUp_L`` -> ``browInnerUp``);
    names that are not ARKit's stay as converted.
    """
    for suffix, side in _SIDES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            sided = base + side
            return base if (sided not in _ARKIT_SET and base in _ARKIT_SET) else sided
    return name


@dataclass(frozen=True)
class TargetMapping:
    """Model expressions -> exported targets: each target is a group of model expressions.

    Shapes (K model expressions, T targets): ``deltas`` (K, V, 3) -> (T, V, 3), the sum over each
    group; ``weights`` (..., K) -> (..., T), the mean over each group.
    """

    names: Tuple[str, ...]
    groups: Tuple[Tuple[int, ...], ...]
    n_source: int

    def matrix(self, reduce: Literal["sum", "mean"]) -> np.ndarray:
        """Shape: (T, K) with 1 (sum) or 1/len(group) (mean) where a model expression feeds a target."""
        m = np.zeros((len(self.names), self.n_source), np.float64)
        for t, group in enumerate(self.groups):
            m[t, list(group)] = 1.0 if reduce == "sum" else 1.0 / len(group)
        return m

    def deltas(self, blendshapes: np.ndarray) -> np.ndarray:
        """Shape: blendshapes (K, V, 3) -> (T, V, 3), each group's deltas summed (dtype kept)."""
        if blendshapes.ndim != 3 or blendshapes.shape[0] != self.n_source:
            raise ValueError(f"blendshapes must be ({self.n_source}, V, 3), got {blendshapes.shape}")
        if all(len(g) == 1 for g in self.groups):
            return blendshapes[[g[0] for g in self.groups]]
        return np.stack([blendshapes[list(g)].sum(0) for g in self.groups])

    def weights(self, weights: np.ndarray) -> np.ndarray:
        """Shape: weights (..., K) -> (..., T), each group's weights averaged."""
        if weights.shape[-1] != self.n_source:
            raise ValueError(f"weights must be (..., {self.n_source}), got {weights.shape}")
        return (weights.astype(np.float64) @ self.matrix("mean").T).astype(weights.dtype)


def target_mapping(expression_names: Sequence[str], names: NameStyle = "arkit") -> TargetMapping:
    """How a rig's K expressions become exported targets.

    ``names="model"`` keeps the K expressions under their own names; ``"arkit"`` renames them with
    `arkit_name` and merges expressions that get the same name (the split halves), targets in the
    order of their first model expression.
    """
    expression_names = list(expression_names)
    if names == "model":
        return TargetMapping(tuple(expression_names), tuple((k,) for k in range(len(expression_names))),
                             len(expression_names))
    if names != "arkit":
        raise ValueError(f"names must be 'arkit' or 'model', got {names!r}")
    groups: Dict[str, List[int]] = {}
    for k, name in enumerate(expression_names):
        groups.setdefault(arkit_name(name), []).append(k)
    unknown = [n for n in groups if n not in _ARKIT_SET]
    if unknown:
        logger.warning("expressions without an ARKit name keep their own: %s", ", ".join(unknown[:8]))
    return TargetMapping(tuple(groups), tuple(tuple(g) for g in groups.values()), len(expression_names))


def arkit_matrix(expression_names: Sequence[str]) -> np.ndarray:
    """The linear map from a model's weights to the 52 ARKit weights (`ARKIT_NAMES` order).

    Shape: (52, K); row of an ARKit shape the model lacks (e.g. ``tongueOut`` on ICT) is zero.
    """
    mapping = target_mapping(expression_names, "arkit")
    mean = mapping.matrix("mean")
    out = np.zeros((len(ARKIT_NAMES), mapping.n_source), np.float64)
    row = {name: i for i, name in enumerate(ARKIT_NAMES)}
    for t, name in enumerate(mapping.names):
        if name in row:
            out[row[name]] = mean[t]
    missing = [n for n in ARKIT_NAMES if n not in mapping.names and n != "tongueOut"]
    if missing:
        logger.warning("the rig has no expression for ARKit %s: written as 0", ", ".join(missing[:8]))
    return out


def to_arkit_weights(weights: np.ndarray, expression_names: Sequence[str]) -> np.ndarray:
    """The 52 ARKit weights (`ARKIT_NAMES` order) of model weights, halves averaged, absent shapes 0.

    Shape:
        weights (K,) or (N, K) -> (52,) or (N, 52), float32, not clipped.
    """
    weights = np.asarray(weights)
    if weights.ndim not in (1, 2) or weights.shape[-1] != len(expression_names):
        raise ValueError(f"weights must be (K,) or (N, K) with K = {len(expression_names)}, got {weights.shape}")
    return (weights.astype(np.float64) @ arkit_matrix(expression_names).T).astype(np.float32)


def live_link_timecode(frame: int, fps: float) -> str:
    """``HH:MM:SS:FF.fff`` of frame ``frame`` of a clip starting at 0 (``.fff``: thousandths of a frame)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    whole = int(math.floor(frame / fps + 1e-9))
    within = max(frame - whole * fps, 0.0)  # frames into this second (fractional for 29.97 fps)
    ff = int(math.floor(within + 1e-9))
    thousandths = int(round((within - ff) * 1000))
    if thousandths >= 1000:
        ff, thousandths = ff + 1, 0
    hours, rest = divmod(whole, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}:{ff:02d}.{thousandths:03d}"


def _columns(values: Optional[np.ndarray], n: int, width: int, name: str) -> np.ndarray:
    if values is None:
        return np.zeros((n, width), np.float64)
    values = np.asarray(values, np.float64)
    if values.shape != (n, width):
        raise ValueError(f"{name} must be ({n}, {width}), got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} has NaN or infinite values (hold them before writing)")
    return values


def write_live_link_csv(path: Union[str, Path], weights: np.ndarray, expression_names: Sequence[str], fps: float,
                        head_rotation: Optional[np.ndarray] = None, left_eye: Optional[np.ndarray] = None,
                        right_eye: Optional[np.ndarray] = None) -> Path:
    """Write a Live Link Face CSV: one row per frame at ``fps``.

    Args:
        path: the ``.csv`` to write.
        weights: the model's expression weights per frame (mapped with `to_arkit_weights`, clipped
            to [0, 1]).
        expression_names: the K names of ``weights``.
        fps: the video's frame rate (Timecode).
        head_rotation: Euler ``(pitch, yaw, roll)`` radians per frame (docs/conventions.md), written
            as HeadYaw = -yaw, HeadPitch = pitch, HeadRoll = -roll in radians (the app's signs, see
            the module docstring); None writes 0.
        left_eye, right_eye: eye ``(yaw, pitch)`` radians per frame in our convention (yaw + turns
            the gaze towards +x, pitch + down), written as EyeYaw = -yaw, EyePitch = pitch; None
            writes 0. Eye roll is 0.

    Shape:
        weights (N, K), head_rotation (N, 3), left_eye / right_eye (N, 2).
    """
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[0] == 0:
        raise ValueError(f"weights must be (N, K) with N > 0, got {weights.shape}")
    if not np.isfinite(weights).all():
        raise ValueError("weights have NaN or infinite values (hold them before writing)")
    n = weights.shape[0]
    shapes = np.clip(to_arkit_weights(weights, expression_names), 0.0, 1.0)
    head = _columns(head_rotation, n, 3, "head_rotation")[:, [1, 0, 2]] * _APP_SIGNS  # (yaw, pitch, roll)
    eyes = [np.concatenate([_columns(e, n, 2, name), np.zeros((n, 1))], axis=1) * _APP_SIGNS
            for e, name in ((left_eye, "left_eye"), (right_eye, "right_eye"))]
    values = np.concatenate([shapes, head, *eyes], axis=1) + 0.0  # + 0.0: no '-0.0000000000'
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(LIVE_LINK_HEADER)
        for i in range(n):
            writer.writerow([live_link_timecode(i, fps), BLEND_SHAPE_COUNT, *(f"{v:.10f}" for v in values[i])])
    logger.info("wrote %s: %d frames at %.3f fps", path, n, fps)
    return path
