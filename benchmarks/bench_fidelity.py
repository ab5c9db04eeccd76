"""Benchmark: do tracked expression weights mean what their names say? (issue 18)

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_fidelity [--clips 4] [--rig true built]
        [--backends dlib mediapipe] [--cache DIR] [--skip synthetic real]

Synthetic part: scripted clips (`utils.synthetic.actions`: neutral stretches, smile, jaw open, blink,
winks, brows up and down, pucker, funnel, cheek puff, mouth left and right, gaze left, right, up
and down; each clip another identity, base head pose, lighting and background, 320 px frames).
Landmarks are detected on the renders as in real use (`LandmarkStream`: tracked boxes, One Euro
filter on the 68 points; MediaPipe's mesh and irises passed on as they come), then every frame is
tracked by `RigTracker` (lighting off: it does not touch the weights). The rig is the subject's
true rig (``--rig true``: its identity, the model's blendshapes transferred) or one built by the
classical builder from 8 frames of the clip, as the video pipeline does (``--rig built``).
Measures, pooled over the clips:

- per action: Pearson correlation over all frames of the tracked with the true curve (the mean of
  the action's blendshapes; eye yaw / pitch for gaze actions);
- neutral frames (rest for 3 frames or more): the 95th percentile and the mean of all weights;
- mean absolute error of all weights over all frames;
- gaze: correlation of the tracked eye yaw (mean of both eyes) with the true one, and the mean
  absolute yaw and pitch errors (degrees) during gaze actions and at rest;
- jitter: mean absolute frame-to-frame change of all weights over still frames (head, weights and
  gaze unchanged from the previous frame);
- blink onset lag: frames from the truth crossing half its peak to the tracked curve crossing it
  (blinks and winks; a curve that never crosses counts as missed);
- wink one-sidedness: the other eye's eyeBlink over the winking eye's, at the wink's hold;
  mouthClose above jawOpen: frames where it is, by more than 0.01.

Real part (../shared/data/real/videos): the video person's rig from 8 frames (the pipeline's
`scan_video` + `source_rig_from_video`), every frame tracked; the landmark error (mean distance of
the projected rig landmarks to the detected 68 / outer-eye-corner distance); on the stillest
30-frame stretch the weights that fire (mean, 95th percentile, the largest ones); and at
by-eye labelled events (`EVENTS`: blinks, smiles, jaw opens as frame ranges, labelled from
extracted frames) the tracked curve inside the event vs. the 20 frames around it. Speed:
`RigTracker.step` alone (landmarks excluded), with load average printed.
"""
from __future__ import annotations

import argparse
import ast
import inspect
import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.face_model.load import load_face_model  # noqa: E402
from core.face_model.model import MorphableModel  # noqa: E402
from core.fitting.gaze import gaze_from_weights  # noqa: E402
from core.rig.rig import Rig  # noqa: E402
from core.rig.tracker import DenseTies, RigTracker, TrackerConfig  # noqa: E402
from utils.crop import crop_batch, crop_face  # noqa: E402
from utils.landmarks.detect import FaceLandmarker  # noqa: E402
from utils.landmarks.filters import OneEuroParams  # noqa: E402
from utils.landmarks.mesh import load_mesh_correspondence  # noqa: E402
from utils.landmarks.tracking import LandmarkStream  # noqa: E402
from utils.pipelines.builders import classical_builder  # noqa: E402
from utils.synthetic.actions import ACTIONS, KEY_ACTIONS, ActionClip, action_clip  # noqa: E402
from utils.synthetic.clip import ClipRenderer  # noqa: E402
from utils.synthetic.generator import SyntheticGenerator  # noqa: E402

logger = logging.getLogger("bench_fidelity")
REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real" / "videos"
FRAME_SIZE = 320
RIG_FRAMES = 8

#: By-eye labelled events of the shared real videos: (video, kind, first frame, last frame), frames
#: counted from 0, labelled by looking at eye and mouth crops of every frame (extracted with
#: `utils.io.video.VideoReader`, crops around MediaPipe's landmarks, contact sheets of 96-120
#: frames). Kinds: blink (both eyes closed or nearly), wink_left / wink_right (the subject's left /
#: right eye closed, the other open), smile (mouth corners pulled up and back, teeth showing),
#: jaw_open (mouth clearly open), gaze_left / gaze_right (irises turned to the subject's left /
#: right, i.e. the viewer's right / left), eyes_lowered (lids low over a lowered gaze, iris still
#: showing: should not read as a blink).
EVENTS: Tuple[Tuple[str, str, int, int], ...] = (
    ("d0", "gaze_left", 14, 26), ("d0", "gaze_right", 32, 40), ("d0", "smile", 19, 66), ("d0", "blink", 64, 68),
    ("d3", "wink_left", 6, 19), ("d3", "smile", 8, 19), ("d3", "wink_right", 31, 46), ("d3", "smile", 37, 47),
    ("d3", "eyes_lowered", 64, 110), ("d3", "jaw_open", 298, 353),
    ("d6", "smile", 50, 55), ("d6", "jaw_open", 56, 59), ("d6", "jaw_open", 78, 81), ("d6", "smile", 84, 95),
    ("d6", "blink", 207, 209), ("d6", "blink", 219, 225), ("d6", "blink", 390, 394), ("d6", "blink", 452, 453),
    ("d6", "blink", 468, 471),
    ("d12", "smile", 19, 52), ("d12", "blink", 48, 52), ("d12", "smile", 62, 70), ("d12", "jaw_open", 117, 132),
    ("d12", "blink", 134, 137), ("d12", "jaw_open", 166, 182),
)
#: The tracked curve of each event kind: the mean of these blendshapes, or ``gaze yaw`` (degrees,
#: + towards the subject's left).
EVENT_SHAPES = {"blink": ("eyeBlink_L", "eyeBlink_R"), "wink_left": ("eyeBlink_L",), "wink_right": ("eyeBlink_R",),
                "smile": ("mouthSmile_L", "mouthSmile_R"), "jaw_open": ("jawOpen",),
                "eyes_lowered": ("eyeBlink_L", "eyeBlink_R"), "gaze_left": "gaze yaw", "gaze_right": "gaze yaw"}
#: Further curves reported at some events (the other eye at a wink, eyeLookDown at lowered eyes).
EVENT_OTHER = {"wink_left": ("eyeBlink_R",), "wink_right": ("eyeBlink_L",),
               "eyes_lowered": ("eyeLookDown_L", "eyeLookDown_R")}


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# --------------------------------------------------------------------------- clips and landmarks
@dataclass
class ClipData:
    """One rendered clip: its truth and each backend's landmarks (NaN rows where no face)."""

    clip: ActionClip
    identity: np.ndarray
    landmarks: Dict[str, np.ndarray]  # backend -> (T, 68, 2) filtered as the pipeline does
    dense: Optional[np.ndarray]  # (T, 478, 2) MediaPipe's mesh, or None
    rig_frames: np.ndarray  # (RIG_FRAMES,) frame numbers kept for a built rig
    rig_images: np.ndarray  # (RIG_FRAMES, S, S, 3) uint8 frames


def _rig_frame_numbers(clip: ActionClip) -> np.ndarray:
    """Frames for a built rig, spread over the clip (as the pipeline spreads its picks)."""
    return np.linspace(0, clip.truth.n_frames - 1, RIG_FRAMES).round().astype(int)


def make_clip(model: MorphableModel, seed: int, backends: Sequence[str], cache: Optional[Path]) -> ClipData:
    """Render clip ``seed`` and detect landmarks on it with each backend (cached as npz)."""
    names = model.expression_names
    clip = action_clip(names, seed=seed, size=FRAME_SIZE)
    path = None if cache is None else cache / f"clip_{seed:03d}.npz"
    if path is not None and path.is_file():
        z = np.load(path)
        if all(f"landmarks_{b}" in z.files for b in backends):
            clip.truth.landmarks = z["truth_landmarks"]
            return ClipData(clip, z["identity"], {b: z[f"landmarks_{b}"] for b in backends},
                            z["dense"] if "dense" in z.files else None, z["rig_frames"], z["rig_images"])
    subject = SyntheticGenerator(model).subject(1, seed=seed + 500)
    renderer = ClipRenderer(model, subject, seed=seed)
    streams = {b: LandmarkStream(FaceLandmarker(b), filter_params=OneEuroParams()) for b in backends}
    landmarks = {b: np.full((clip.truth.n_frames, 68, 2), np.nan) for b in backends}
    dense = np.full((clip.truth.n_frames, 478, 2), np.nan) if "mediapipe" in backends else None
    keep = _rig_frame_numbers(clip)
    images = []
    for i, frame in enumerate(renderer.frames(clip.truth, FRAME_SIZE, seed=seed)):
        for b, stream in streams.items():
            result = stream(i, frame, i / clip.truth.fps, keep_image=False)
            if result.landmarks is not None:
                landmarks[b][i] = result.landmarks
                if b == "mediapipe" and result.face.dense is not None:
                    dense[i] = result.face.dense
        if i in keep:
            images.append(frame)
    data = ClipData(clip, subject.identity, landmarks, dense, keep, np.stack(images))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = {} if dense is None else {"dense": dense}
        np.savez_compressed(path, truth_landmarks=clip.truth.landmarks, identity=subject.identity,
                            rig_frames=keep, rig_images=data.rig_images,
                            **{f"landmarks_{b}": v for b, v in landmarks.items()}, **extra)
    return data


def clip_rig(face: MorphableModel, data: ClipData, kind: str, backend: str) -> Rig:
    """The rig tracking uses: the true one, or one built from the clip's frames (``backend``'s landmarks)."""
    if kind == "true":
        return Rig.from_model(face, torch.as_tensor(data.identity, dtype=face.dtype))
    frames = [k for k, i in enumerate(data.rig_frames) if np.isfinite(data.landmarks[backend][i]).all()]
    crops = [crop_face(data.rig_images[k], data.landmarks[backend][data.rig_frames[k]]) for k in frames]
    images, landmarks = crop_batch(crops)
    return classical_builder(face, detector=backend)(images, landmarks).rig


# --------------------------------------------------------------------------- tracking
def _accepts(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def make_tracker(rig: Rig, face: MorphableModel, config: TrackerConfig, backend: str) -> RigTracker:
    """The tracker as the pipeline makes it: dense ties for MediaPipe's mesh (where the tracker takes them)."""
    if backend == "mediapipe" and _accepts(RigTracker, "dense"):
        return RigTracker(rig, face, config, dense=DenseTies.from_correspondence(load_mesh_correspondence()))
    return RigTracker(rig, face, config)


def track(tracker: RigTracker, landmarks: np.ndarray, dense: Optional[np.ndarray] = None,
          rest_frames: int = 0) -> Tuple[np.ndarray, Optional[np.ndarray], List[float], np.ndarray]:
    """Every frame through ``tracker.step``: expression (T, K), gaze (T, 2, 2) or None, seconds per
    step, landmark error (T,) (fraction of the eye distance, NaN where not fitted).

    With ``rest_frames`` the tracker first calibrates the person's rest face on that many frames
    spread over the clip (where the tracker has `calibrate_rest`).
    """
    T = len(landmarks)
    ok = np.isfinite(landmarks).all(axis=(1, 2))
    with_dense = dense is not None and _accepts(tracker.step, "dense")
    if rest_frames and hasattr(tracker, "calibrate_rest"):
        pick = np.flatnonzero(ok)[np.linspace(0, ok.sum() - 1, min(rest_frames, int(ok.sum()))).round().astype(int)]
        tracker.calibrate_rest([landmarks[i] for i in pick],
                               [dense[i] for i in pick] if with_dense else None)
    expression, gaze, seconds, errors = [], [], [], []
    for i in range(T):
        lms = landmarks[i] if ok[i] else None
        kwargs = {}
        if with_dense:
            kwargs["dense"] = dense[i] if ok[i] and np.isfinite(dense[i]).all() else None
        start = time.perf_counter()
        result = tracker.step(lms, **kwargs)
        seconds.append(time.perf_counter() - start)
        expression.append(result.expression.numpy())
        errors.append(result.error if result.detected else float("nan"))
        g = getattr(result, "gaze", None)
        gaze.append(None if g is None else g.numpy())
    has_gaze = any(g is not None for g in gaze)
    gaze_arr = np.stack([np.zeros((2, 2)) if g is None else g for g in gaze]) if has_gaze else None
    return np.stack(expression), gaze_arr, seconds, np.array(errors)


# --------------------------------------------------------------------------- measures
def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def action_curves(clips: Sequence[ActionClip], tracked: Sequence[np.ndarray], gazes: Sequence[Optional[np.ndarray]],
                  names: Sequence[str]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Per action name: (true curve, tracked curve) over all frames of all clips."""
    index = {n: i for i, n in enumerate(names)}
    out: Dict[str, Tuple[List[np.ndarray], List[np.ndarray]]] = {}
    for clip, expr, gaze in zip(clips, tracked, gazes):
        tracked_gaze = gaze if gaze is not None else gaze_from_weights(torch.from_numpy(expr), names).numpy()
        for action in clip.actions:
            if action.curve_names:
                cols = [index[n] for n in action.curve_names]
                true, got = clip.truth.expression[:, cols].mean(1), expr[:, cols].mean(1)
            else:
                axis = 0 if action.gaze[0] != 0 else 1
                true, got = clip.truth.gaze[:, :, axis].mean(1), tracked_gaze[:, :, axis].mean(1)
            entry = out.setdefault(action.name, ([], []))
            entry[0].append(true)
            entry[1].append(got)
    return {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in out.items()}


def action_gains(clip: ActionClip, expr: np.ndarray, gaze: Optional[np.ndarray],
                 names: Sequence[str]) -> Dict[str, float]:
    """Per action event: the tracked curve's peak over the true peak (1 = full amplitude)."""
    index = {n: i for i, n in enumerate(names)}
    tracked_gaze = gaze if gaze is not None else gaze_from_weights(torch.from_numpy(expr), names).numpy()
    out = {}
    for a, action in enumerate(clip.actions):
        frames = np.flatnonzero(clip.labels == a)
        if action.curve_names:
            cols = [index[n] for n in action.curve_names]
            true, got = clip.truth.expression[frames][:, cols].mean(1), expr[frames][:, cols].mean(1)
        else:
            axis = 0 if action.gaze[0] != 0 else 1
            sign = np.sign(action.gaze[axis])
            true, got = sign * clip.truth.gaze[frames, :, axis].mean(1), sign * tracked_gaze[frames, :, axis].mean(1)
        out.setdefault(action.name, []).append(float(got.max() / max(true.max(), 1e-6)))
    return {k: float(np.mean(v)) for k, v in out.items()}


def crosstalk(clips: Sequence[ActionClip], tracked: Sequence[np.ndarray], names: Sequence[str],
              top: int = 2) -> Dict[str, str]:
    """Per action: the shapes outside it (and outside gaze) with the largest mean weight over its holds."""
    sums: Dict[str, list] = {}
    for clip, expr in zip(clips, tracked):
        for a, action in enumerate(clip.actions):
            start = np.flatnonzero(clip.labels == a)[0] + action.attack
            sums.setdefault(action.name, []).append(expr[start:start + action.hold].mean(0))
    out = {}
    for name, rows in sums.items():
        action = next(a for a in clips[0].actions if a.name == name)
        own = set(action.weights) | {n for n in names if n.startswith("eyeLook")}
        if name.startswith(("blink", "wink")):
            own |= {"eyeBlink_L", "eyeBlink_R", "cheekSquint_L", "cheekSquint_R"}
        mean = np.mean(rows, 0)
        order = [i for i in np.argsort(-mean) if names[i] not in own][:top]
        out[name] = ", ".join(f"{names[i]} {mean[i]:.2f}" for i in order)
    return out


def onset_lags(clip: ActionClip, expr: np.ndarray, names: Sequence[str]) -> List[float]:
    """Blink and wink onset lags (frames; NaN where the tracked curve never reaches half the peak)."""
    index = {n: i for i, n in enumerate(names)}
    lags = []
    for a, action in enumerate(clip.actions):
        if not action.name.startswith(("blink", "wink")):
            continue
        frames = np.flatnonzero(clip.labels == a)
        cols = [index[n] for n in action.curve_names]
        true, got = clip.truth.expression[:, cols].mean(1), expr[:, cols].mean(1)
        half = 0.5 * true[frames].max()
        t_true = frames[np.argmax(true[frames] >= half)]
        window = np.arange(frames[0], min(frames[-1] + 8, len(got)))
        crossed = window[got[window] >= half]
        lags.append(float(crossed[0] - t_true) if len(crossed) else float("nan"))
    return lags


def wink_ratio(clip: ActionClip, expr: np.ndarray, names: Sequence[str]) -> List[float]:
    index = {n: i for i, n in enumerate(names)}
    out = []
    for a, action in enumerate(clip.actions):
        if not action.name.startswith("wink"):
            continue
        side = action.curve_names[0]
        other = side[:-1] + ("R" if side.endswith("L") else "L")
        a0 = np.flatnonzero(clip.labels == a)[0] + action.attack
        hold = slice(a0, a0 + action.hold)
        own = expr[hold, index[side]].mean()
        out.append(float(expr[hold, index[other]].mean() / max(own, 1e-3)))
    return out


def summarize(clips: Sequence[ActionClip], tracked: Sequence[np.ndarray], gazes: Sequence[Optional[np.ndarray]],
              names: Sequence[str], seconds: Sequence[float]) -> dict:
    """All synthetic measures of one (backend, rig, tracker) setting."""
    curves = action_curves(clips, tracked, gazes, names)
    corr = {k: _corr(*v) for k, v in curves.items()}
    gains: Dict[str, list] = {}
    for c, e, g in zip(clips, tracked, gazes):
        for k, v in action_gains(c, e, g, names).items():
            gains.setdefault(k, []).append(v)
    gain = {k: float(np.mean(v)) for k, v in gains.items()}
    cross = crosstalk(clips, tracked, names)
    neutral = np.concatenate([e[c.neutral()] for c, e in zip(clips, tracked)])
    err = np.concatenate([np.abs(e - c.truth.expression) for c, e in zip(clips, tracked)])
    jit = []
    for c, e in zip(clips, tracked):
        s = c.still()
        both = s[1:] & s[:-1]
        jit.append(np.abs(e[1:] - e[:-1])[both])
    jit = np.concatenate(jit)
    lags = sum((onset_lags(c, e, names) for c, e in zip(clips, tracked)), [])
    winks = sum((wink_ratio(c, e, names) for c, e in zip(clips, tracked)), [])
    index = {n: i for i, n in enumerate(names)}
    close_above = sum(int((e[:, index["mouthClose"]] > e[:, index["jawOpen"]] + 0.01).sum()) for e in tracked)
    gaze_err = {}
    true_gaze = np.concatenate([c.truth.gaze for c in clips])
    got_gaze = np.concatenate([g if g is not None else gaze_from_weights(torch.from_numpy(e), names).numpy()
                               for g, e in zip(gazes, tracked)])
    looking = np.concatenate([np.isin(c.labels, [a for a, act in enumerate(c.actions) if act.gaze != (0.0, 0.0)])
                              for c in clips])
    rest = np.concatenate([c.neutral() for c in clips])
    for label, sel in (("gaze actions", looking), ("rest", rest)):
        d = np.degrees(np.abs(got_gaze[sel] - true_gaze[sel])).mean(1)  # (n, 2) over eyes
        gaze_err[label] = (float(d[:, 0].mean()), float(d[:, 1].mean()))
    gaze_corr = _corr(true_gaze[:, :, 0].mean(1), got_gaze[:, :, 0].mean(1))
    top = np.argsort(-neutral.mean(0))[:4]
    return {
        "corr": corr, "gain": gain, "cross": cross, "key_mean": float(np.nanmean([corr[k] for k in KEY_ACTIONS])),
        "neutral_p95": float(np.percentile(neutral, 95)), "neutral_mean": float(neutral.mean()),
        "neutral_top": ", ".join(f"{names[i]} {neutral[:, i].mean():.2f}" for i in top),
        "mae": float(err.mean()), "jitter": float(jit.mean()) if len(jit) else float("nan"),
        "lag": float(np.nanmean(lags)) if np.isfinite(lags).any() else float("nan"),
        "missed": int(np.isnan(lags).sum()), "events": len(lags),
        "wink": float(np.mean(winks)) if winks else float("nan"), "close_above": close_above,
        "gaze_corr": gaze_corr, "gaze_err": gaze_err,
        "fps": 1.0 / float(np.median(seconds)),
        "frames": int(sum(len(e) for e in tracked)),
    }


def print_synthetic(results: Dict[str, dict]) -> None:
    """Markdown tables of `summarize` results keyed by setting label."""
    actions = list(dict.fromkeys(a.name for a in ACTIONS))
    labels = list(results)
    print("\nCorrelation of tracked with true curves over all frames (key actions in bold)\n")
    print("| action | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for a in actions:
        name = f"**{a}**" if a in KEY_ACTIONS else a
        print(f"| {name} | " + " | ".join(f"{results[l]['corr'].get(a, float('nan')):.2f}" for l in labels) + " |")
    print("| **mean of key actions** | " + " | ".join(f"**{results[l]['key_mean']:.2f}**" for l in labels) + " |")
    print("\nAmplitude: tracked peak over true peak per action event (mean; 1 = full)\n")
    print("| action | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for a in actions:
        print(f"| {a} | " + " | ".join(f"{results[l]['gain'].get(a, float('nan')):.2f}" for l in labels) + " |")
    print("\nCrosstalk: the other shapes (not the action's, not gaze) with the largest mean weight over the "
          "action's holds\n")
    print("| action | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for a in actions:
        print(f"| {a} | " + " | ".join(results[l]["cross"].get(a, "") for l in labels) + " |")
    print("\nOther measures\n")
    print("| measure | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    rows = [
        ("neutral frames: 95th pct of all weights", lambda r: f"{r['neutral_p95']:.3f}"),
        ("neutral frames: mean of all weights", lambda r: f"{r['neutral_mean']:.3f}"),
        ("neutral frames: largest mean weights", lambda r: r["neutral_top"]),
        ("mean abs error of all weights", lambda r: f"{r['mae']:.3f}"),
        ("gaze: correlation with true eye yaw", lambda r: f"{r['gaze_corr']:.2f}"),
        ("gaze error during gaze actions, yaw / pitch (deg)",
         lambda r: "{:.1f} / {:.1f}".format(*r["gaze_err"]["gaze actions"])),
        ("gaze error at rest, yaw / pitch (deg)", lambda r: "{:.1f} / {:.1f}".format(*r["gaze_err"]["rest"])),
        ("jitter on still frames (mean abs change per frame)", lambda r: f"{r['jitter']:.4f}"),
        ("blink / wink onset lag (frames), missed", lambda r: f"{r['lag']:.1f}, {r['missed']}/{r['events']}"),
        ("wink: other eye / winking eye", lambda r: f"{r['wink']:.2f}"),
        ("frames with mouthClose > jawOpen + 0.01", lambda r: str(r["close_above"])),
        ("fit speed, frames/s (median step, lighting off)", lambda r: f"{r['fps']:.0f}"),
    ]
    for label, fmt in rows:
        print(f"| {label} | " + " | ".join(fmt(results[l]) for l in labels) + " |")


def run_synthetic(model: MorphableModel, face: MorphableModel, args: argparse.Namespace,
                  configs: Dict[str, TrackerConfig]) -> Dict[str, dict]:
    names = model.expression_names
    clips = []
    for k in range(args.clips):
        start = time.perf_counter()
        clips.append(make_clip(model, 2000 + k, args.backends, args.cache))
        logger.info("clip %d ready (%.0f s)", k, time.perf_counter() - start)
    results = {}
    for rig_kind in args.rig:
        for backend in args.backends:
            rigs = [clip_rig(face, d, rig_kind, backend) for d in clips]
            for cname, config in configs.items():
                tracked, gazes, seconds = [], [], []
                for d, rig in zip(clips, rigs):
                    tracker = make_tracker(rig, face, config, backend)
                    dense = d.dense if backend == "mediapipe" else None
                    e, g, s, _ = track(tracker, d.landmarks[backend], dense, rest_frames=args.rest_frames)
                    tracked.append(e)
                    gazes.append(g)
                    seconds.extend(s)
                label = f"{backend}, {rig_kind} rig" + ("" if len(configs) == 1 else f", {cname}")
                results[label] = summarize([d.clip for d in clips], tracked, gazes, names, seconds)
                logger.info("%s: key mean %.2f (%s)", label, results[label]["key_mean"], load_average())
    print(f"\nSynthetic: {args.clips} clips x {clips[0].clip.truth.n_frames} frames ({FRAME_SIZE} px), seeds "
          f"2000-{1999 + args.clips}; {load_average()}")
    print_synthetic(results)
    return results


# --------------------------------------------------------------------------- real videos
def stillest(landmarks: np.ndarray, length: int = 30) -> int:
    """Start of the ``length``-frame window whose landmarks move least (mean frame-to-frame motion)."""
    motion = np.linalg.norm(landmarks[1:] - landmarks[:-1], axis=-1).mean(1)
    motion = np.where(np.isfinite(motion), motion, np.inf)
    sums = np.convolve(motion, np.ones(length - 1), mode="valid")
    return int(np.argmin(sums))


def run_real(model: MorphableModel, face: MorphableModel, args: argparse.Namespace,
             configs: Dict[str, TrackerConfig]) -> None:
    from utils.pipelines.video import scan_video, source_rig_from_video

    names = model.expression_names
    index = {n: i for i, n in enumerate(names)}
    print(f"\nReal videos ({REAL}); {load_average()}\n")
    print("| video | backend | setting | frames | landmark error % eye (mean / max) | fit fps | stillest 30 frames: "
          "mean / 95th pct of all weights | largest there |")
    print("|---|---|---|---|---|---|---|---|")
    event_rows = []
    for video in args.videos:
        path = REAL / f"{video}.mp4"
        if not path.is_file():
            print(f"| {video} | missing | | | | | | |")
            continue
        for backend in args.backends:
            landmarker = FaceLandmarker(backend)
            with scan_video(path, landmarker) as scan:
                rig, _ = source_rig_from_video(scan, face, detector=backend)
                lms = np.stack([scan.landmarks[i] if scan.landmarks[i] is not None else np.full((68, 2), np.nan)
                                for i in range(scan.frames)])
                dense = None
                if backend == "mediapipe" and hasattr(scan, "dense"):
                    dense = np.stack([scan.dense[i] if scan.dense[i] is not None else np.full((478, 2), np.nan)
                                      for i in range(scan.frames)])
            start = stillest(lms)
            for cname, config in configs.items():
                tracker = make_tracker(rig, face, config, backend)
                expr, gaze, seconds, errors = track(tracker, lms, dense, rest_frames=args.rest_frames)
                still = expr[start:start + 30]
                top = np.argsort(-still.mean(0))[:3]
                print(f"| {video} | {backend} | {cname} | {len(lms)} | {100 * np.nanmean(errors):.2f} / "
                      f"{100 * np.nanmax(errors):.2f} | {1 / np.median(seconds):.0f} | {still.mean():.3f} / "
                      f"{np.percentile(still, 95):.3f} | "
                      + ", ".join(f"{names[i]} {still[:, i].mean():.2f}" for i in top) + " |")
                for v, kind, first, last in EVENTS:
                    if v != video:
                        continue
                    if EVENT_SHAPES[kind] == "gaze yaw":
                        if gaze is None:
                            continue
                        curve = np.degrees(gaze[:, :, 0].mean(1))
                    else:
                        curve = expr[:, [index[n] for n in EVENT_SHAPES[kind]]].mean(1)
                    inside = curve[first:last + 1]
                    around = np.r_[curve[max(0, first - 20):first], curve[last + 1:last + 21]]
                    peak = inside.min() if kind == "gaze_right" else inside.max()
                    other = EVENT_OTHER.get(kind)
                    other_mean = "" if other is None else \
                        f"{', '.join(other)} {expr[first:last + 1, [index[n] for n in other]].mean():.2f}"
                    event_rows.append((video, backend, cname, kind, first, last, float(peak),
                                       float(inside.mean()), float(np.median(around)), other_mean))
    if event_rows:
        print("\nBy-eye labelled events: the tracked curve (`EVENT_SHAPES`; gaze yaw in degrees) inside the "
              "event (peak, mean) vs. the median of the 20 frames on each side\n")
        print("| video | backend | setting | event | frames | peak inside | mean inside | median around | other |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in event_rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]}-{r[5]} | {r[6]:.2f} | {r[7]:.2f} | {r[8]:.2f} | "
                  f"{r[9]} |")


def run_speed(face: MorphableModel, args: argparse.Namespace, config: TrackerConfig, video: str = "d3",
              frames: int = 300, repeats: int = 3) -> None:
    """Frames per second of `RigTracker.step` (fit only, and fit + lighting) and of the landmarks,
    on the first ``frames`` frames of a real video; medians over ``repeats`` passes."""
    from utils.io.video import VideoReader
    from utils.pipelines.video import scan_video, source_rig_from_video

    path = REAL / f"{video}.mp4"
    if not path.is_file():
        print(f"\n{path} absent: speed skipped")
        return
    print(f"\nSpeed on {video} (first {frames} frames), torch 1 thread, medians of {repeats} passes; "
          f"{load_average()} at the start\n")
    print("| backend | landmarks ms/frame (detect + mesh/shape + flow) | fit only: frames/s | fit + lighting: frames/s "
          "| landmarks + fit: frames/s | landmarks + fit + lighting: frames/s | load average after |")
    print("|---|---|---|---|---|---|---|")
    with VideoReader(path) as reader:
        images = [img for _, img in zip(range(frames), reader)]
    for backend in args.backends:
        landmarker = FaceLandmarker(backend)
        marks = []
        for _ in range(repeats):
            stream = LandmarkStream(landmarker, filter_params=OneEuroParams())
            per = []
            results = []
            for i, image in enumerate(images):
                start = time.perf_counter()
                results.append(stream(i, image, i / 25.0, keep_image=False))
                per.append(time.perf_counter() - start)
            marks.append(float(np.median(per)))
        lms = [r.landmarks for r in results]
        dense = [None if r.face is None else r.face.dense for r in results]
        with scan_video(path, landmarker) as scan:
            rig, _ = source_rig_from_video(scan, face, detector=backend)
        fps = {}
        for lighting in (False, True):
            passes = []
            for _ in range(repeats):
                tracker = make_tracker(rig, face, replace(config, lighting=lighting), backend)
                per = []
                for i, image in enumerate(images):
                    start = time.perf_counter()
                    tracker.step(lms[i], image if lighting else None, **({"dense": dense[i]} if backend == "mediapipe"
                                                                        else {}))
                    per.append(time.perf_counter() - start)
                passes.append(float(np.median(per)))
            fps[lighting] = float(np.median(passes))
        mark = float(np.median(marks))
        print(f"| {backend} | {1e3 * mark:.1f} | {1 / fps[False]:.0f} | {1 / fps[True]:.0f} | "
              f"{1 / (mark + fps[False]):.0f} | {1 / (mark + fps[True]):.0f} | {load_average()} |")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--rig", nargs="+", default=["true"], choices=["true", "built"])
    parser.add_argument("--backends", nargs="+", default=["dlib", "mediapipe"])
    parser.add_argument("--videos", nargs="+", default=["d0", "d3", "d6", "d12"])
    parser.add_argument("--cache", type=Path, default=None, help="keep rendered clips' landmarks here")
    parser.add_argument("--rest-frames", type=int, default=240, help="frames the rest face is calibrated on")
    parser.add_argument("--skip", nargs="*", default=[], choices=["synthetic", "real", "speed"])
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME:FIELD=VALUE,...: also track with these TrackerConfig fields (Python literals)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    model = load_face_model("ict", REPO / "external" / "ICT-FaceKit")
    face = model.region("face")
    configs = {"default": TrackerConfig(lighting=False)}
    for spec in args.variant:
        name, _, fields = spec.partition(":")
        values = dict(item.split("=", 1) for item in fields.split(";") if item)
        configs[name] = replace(configs["default"], **{k: ast.literal_eval(v) for k, v in values.items()})
    if "synthetic" not in args.skip:
        run_synthetic(model, face, args, configs)
    if "real" not in args.skip:
        if REAL.is_dir():
            run_real(model, face, args, configs)
        else:
            print(f"\n{REAL} absent: real-video part skipped")
    if "speed" not in args.skip:
        run_speed(face, args, configs["default"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
