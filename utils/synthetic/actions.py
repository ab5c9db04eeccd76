"""Scripted synthetic clips for judging expression tracking: one named action at a time, known weights.

A clip (`action_clip`) starts and ends at rest and plays a list of `Action` s (smile, jaw open,
blink, wink, brows up and down, pucker, funnel, cheek puff, mouth left and right, gaze left, right,
up and down), each eased in, held and eased out, separated by neutral stretches. The head sways
slowly (yaw, pitch, roll around a per-clip base pose) while actions play and holds still over the
neutral stretches, so that those give still frames for jitter measures. Gaze actions turn the
eyeballs (`ClipRenderer.turn_eyes`) and set the matching eyeLook* weights (`core.fitting.gaze`),
as a tracker should report them. Per frame the clip records which action plays (``labels``).

Rendering goes through `utils.synthetic.clip.ClipRenderer` (per-vertex SH shading, full head with
eyes, teeth and lashes). Everything is deterministic given the seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from core.fitting.gaze import gaze_weights
from utils.synthetic.clip import ClipTruth
from utils.synthetic.scene import sample_sh

__all__ = ["Action", "ACTIONS", "KEY_ACTIONS", "ActionClip", "action_clip"]


@dataclass(frozen=True)
class Action:
    """One facial action at full intensity and its timing (frames at 25 fps).

    Attributes:
        name: the action's name.
        weights: blendshape name -> weight at full intensity.
        gaze: (yaw, pitch) radians of both eyes at full intensity.
        measure: the blendshapes whose mean is the action's curve (default: those of ``weights``).
        attack, hold, release: frames easing in, held, easing out.
    """

    name: str
    weights: Dict[str, float] = field(default_factory=dict)
    gaze: Tuple[float, float] = (0.0, 0.0)
    measure: Tuple[str, ...] = ()
    attack: int = 4
    hold: int = 8
    release: int = 4

    @property
    def length(self) -> int:
        return self.attack + self.hold + self.release

    @property
    def curve_names(self) -> Tuple[str, ...]:
        return self.measure or tuple(self.weights)


_D = math.radians
#: The benchmark's actions, in playing order.
ACTIONS: Tuple[Action, ...] = (
    Action("smile", {"mouthSmile_L": 0.8, "mouthSmile_R": 0.8, "cheekSquint_L": 0.3, "cheekSquint_R": 0.3},
           measure=("mouthSmile_L", "mouthSmile_R")),
    Action("jaw_open", {"jawOpen": 0.6}),
    Action("blink", {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0}, attack=2, hold=2, release=3),
    Action("brows_up", {"browInnerUp_L": 0.8, "browInnerUp_R": 0.8, "browOuterUp_L": 0.7, "browOuterUp_R": 0.7}),
    Action("pucker", {"mouthPucker": 0.9}),
    Action("wink_left", {"eyeBlink_L": 1.0, "cheekSquint_L": 0.2}, measure=("eyeBlink_L",), attack=3, hold=4,
           release=3),
    Action("wink_right", {"eyeBlink_R": 1.0, "cheekSquint_R": 0.2}, measure=("eyeBlink_R",), attack=3, hold=4,
           release=3),
    Action("brows_down", {"browDown_L": 0.8, "browDown_R": 0.8}),
    Action("funnel", {"mouthFunnel": 0.7, "jawOpen": 0.15}, measure=("mouthFunnel",)),
    Action("cheek_puff", {"cheekPuff_L": 0.8, "cheekPuff_R": 0.8}),
    Action("mouth_left", {"mouthLeft": 0.6}),
    Action("mouth_right", {"mouthRight": 0.6}),
    Action("gaze_left", gaze=(_D(25.0), 0.0), attack=3, hold=10, release=3),
    Action("gaze_right", gaze=(_D(-25.0), 0.0), attack=3, hold=10, release=3),
    Action("gaze_up", gaze=(0.0, _D(-15.0)), attack=3, hold=10, release=3),
    Action("gaze_down", gaze=(0.0, _D(20.0)), attack=3, hold=10, release=3),
    Action("blink", {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0}, attack=2, hold=1, release=3),
)
#: The actions the issue's targets name (mean correlation >= 0.9, each >= 0.75).
KEY_ACTIONS = ("smile", "jaw_open", "blink", "brows_up", "pucker")


@dataclass
class ActionClip:
    """A scripted clip's ground truth (`ClipTruth`, with ``gaze``) and its per-frame labels.

    Attributes:
        truth: per-frame expression, pose, gaze, lighting.
        labels: (T,) index into ``actions`` of the action playing, -1 at rest.
        intensity: (A,) each action's intensity in this clip.
        actions: the actions played, in order.
    """

    truth: ClipTruth
    labels: np.ndarray
    intensity: np.ndarray
    actions: Tuple[Action, ...]

    def neutral(self, settle: int = 3) -> np.ndarray:
        """(T,) bool frames at rest for at least ``settle`` frames (truth: no weight, no gaze)."""
        rest = self.labels < 0
        out = rest.copy()
        for k in range(1, settle + 1):
            out[k:] &= rest[:-k]
        out[:settle] &= rest[:settle]
        return out

    def still(self) -> np.ndarray:
        """(T,) bool frames where neither head pose nor weights nor gaze changed from the previous frame."""
        t = self.truth
        same = np.ones(t.n_frames, bool)
        same[0] = False
        for a in (t.expression, t.rotation, t.trans2d, t.gaze.reshape(t.n_frames, -1)):
            same[1:] &= np.all(a[1:] == a[:-1], axis=1)
        return same


def _ease(x: np.ndarray) -> np.ndarray:
    return x * x * (3.0 - 2.0 * x)


def _envelope(action: Action) -> np.ndarray:
    up = _ease(np.arange(1, action.attack + 1) / action.attack)
    down = _ease(np.arange(action.release - 1, -1, -1) / action.release)
    return np.concatenate([up, np.ones(action.hold), down])


def action_clip(names: Sequence[str], seed: int = 0, size: int = 320, actions: Sequence[Action] = ACTIONS,
                rest: int = 10, lead: int = 12, base_pose_deg: Optional[Tuple[float, float, float]] = None,
                sway_deg: Tuple[float, float, float] = (2.0, 4.0, 1.5), face_px: float = 0.5,
                intensity: Tuple[float, float] = (0.7, 1.0), fps: float = 25.0) -> ActionClip:
    """The scripted clip's ground truth (no rendering; render with `ClipRenderer.frames`).

    Args:
        names: the model's expression names (ICT).
        seed: base pose, sway phases, intensities and lighting follow from it.
        size: frame side (pixels).
        actions: played in this order.
        rest: neutral frames after each action (the head holds still over them).
        lead: neutral, still frames before the first action.
        base_pose_deg: (pitch, yaw, roll) around which the head sways; default drawn from the seed
            (yaw within +-20, pitch +-8, roll +-4 degrees).
        sway_deg: amplitude of the slow sway (pitch, yaw, roll) while actions play.
        face_px: the face's width as a fraction of the frame.
        intensity: range of each action's random intensity.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 23]))
    index = {n: i for i, n in enumerate(names)}
    if base_pose_deg is None:
        base_pose_deg = (rng.uniform(-8, 8), rng.uniform(-20, 20), rng.uniform(-4, 4))
    scales = rng.uniform(*intensity, size=len(actions))
    n_frames = lead + sum(a.length + rest for a in actions)
    expression = np.zeros((n_frames, len(names)), np.float32)
    gaze = np.zeros((n_frames, 2, 2), np.float32)
    labels = np.full(n_frames, -1, np.int64)
    moving = np.zeros(n_frames, bool)
    t = lead
    for a, (action, scale) in enumerate(zip(actions, scales)):
        unknown = [n for n in action.weights if n not in index]
        if unknown:
            raise ValueError(f"action {action.name!r}: blendshapes {unknown} are not among the model's names")
        env = scale * _envelope(action)
        span = slice(t, t + action.length)
        for name, value in action.weights.items():
            expression[span, index[name]] = env * value
        gaze[span] = np.asarray(action.gaze, np.float32)[None, None] * env[:, None, None]
        labels[span] = a
        moving[span] = True
        t += action.length + rest
    if np.any(gaze):
        looks = gaze_weights(torch.from_numpy(gaze), names).numpy()
        is_look = np.array([n.startswith("eyeLook") for n in names])
        expression[:, is_look] = looks[:, is_look]
    # The head's clock runs while actions play and stops at rest.
    clock = np.cumsum(moving).astype(np.float64)
    phase = clock * 2 * math.pi / 90.0
    offsets = rng.uniform(0, 2 * math.pi, size=3)
    sway = np.stack([math.radians(sway_deg[k]) * np.sin((0.7 + 0.3 * k) * phase + offsets[k]) for k in range(3)], 1)
    rotation = np.radians(np.asarray(base_pose_deg))[None] + sway
    scale = np.full(n_frames, face_px * size / 140.0)
    drift = np.stack([np.sin(0.5 * phase), np.cos(0.4 * phase) - 1], 1) * 0.01 * size
    trans2d = (size - 1) / 2 + drift
    trans2d[:, 1] += 0.04 * size
    truth = ClipTruth(expression=expression, rotation=rotation.astype(np.float32), scale=scale.astype(np.float32),
                      trans2d=trans2d.astype(np.float32), sh=np.asarray(sample_sh(rng), np.float32),
                      still=(0, lead), fps=fps, gaze=gaze)
    return ActionClip(truth, labels, scales.astype(np.float32), tuple(actions))
