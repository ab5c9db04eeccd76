"""Does a rig look like its person to a face recogniser? (issue 21's real-photo row)

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_recognition [--held-out 4]

People: the rig_case1 photos and the person of each shared video (talking heads and, unless
``--no-wild``, the videos as people shoot them; 16 frames spread over each clip), in two disjoint
sets each (`benchmarks.rig_eval`: alternate photos / frames). Each person's textured whole-head
rig is built from set A as the pipelines build it (`benchmarks.rig_eval.textured`: classical
builder, dlib landmarks). Each of the first ``--held-out`` photos of set B is then fitted by
every person's rig (one `RigTracker` step on the photo: expression, pose, SH lighting) and that rig
is rendered over the photo in that fit (its hair, ears and background stay the photo's, so only the
face differs). dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``, shipped
in face-recognition-models; 128-d descriptors, same person below about 0.6) compares the photo with
each render.

Prints (docs/benchmarks.md, "Recognised as the same person"), for the rigs with their texture and
again with their per-vertex albedo only (shape and smooth colour, no photo detail): per person, the
descriptor distance from its held-out photos to the render of its own rig and to the renders of
the others' rigs; how often its own rig is the nearest (rank 1); the distance to the model's mean
face rendered the same way (a rig that carries no identity); and the recogniser's own scale, photo
to photo (held-out photos against the same person's set-A photos, and against the other people's).
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from benchmarks.rig_eval import SHARED, folder_crops, mean_face, textured, video_frame_sets
from core.face_model.load import load_face_model
from core.rig.retarget import RigRenderer
from core.rig.rig import Rig
from core.rig.tracker import FrameTrack, RigTracker, TrackerConfig
from utils.crop import FaceCrop
from utils.landmarks.detect import FaceLandmarker, face_recognition_model

logger = logging.getLogger("bench_recognition")
ROOT = Path(__file__).resolve().parents[1]


class FaceRecogniser:
    """dlib's face-recognition ResNet: a 128-d descriptor of the face at given 68 landmarks.

    The descriptor is computed on dlib's own aligned 150 px chip, placed by the 68 points (iBUG
    order, (x, y) pixels) given, so the same points serve a photo and a render of a rig over it.
    """

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        path = face_recognition_model("dlib_face_recognition_resnet_model_v1.dat")
        self._model = dlib.face_recognition_model_v1(path)

    def descriptor(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(128,) descriptor of the face of ``image`` (H, W, 3) uint8 RGB at ``landmarks`` (68, 2)."""
        dlib = self._dlib
        points = [dlib.point(int(round(x)), int(round(y))) for x, y in np.asarray(landmarks, dtype=np.float64)]
        x0, y0 = np.floor(np.asarray(landmarks).min(0)).astype(int)
        x1, y1 = np.ceil(np.asarray(landmarks).max(0)).astype(int)
        shape = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)), points)
        return np.asarray(self._model.compute_face_descriptor(np.ascontiguousarray(image), shape))


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two descriptors (dlib's measure; same person below about 0.6)."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def render_over(rig: Rig, renderer: RigRenderer, track: FrameTrack, crop: FaceCrop) -> np.ndarray:
    """``rig`` drawn by its ``renderer`` over the photo ``crop`` in the fit ``track`` (its expression,
    pose and SH light). Shape: -> (H, W, 3) uint8, the crop's size."""
    photo = torch.from_numpy(np.ascontiguousarray(crop.image)).permute(2, 0, 1)[None].float() / 255
    render = renderer(rig.head_vertices(track.expression[None]), track.pose, photo,
                      None if track.sh is None else track.sh[None])
    return (render[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()


def people(landmarker: FaceLandmarker, wild: bool = True, min_a: int = 4, min_b: int = 2
           ) -> Dict[str, Tuple[List[FaceCrop], List[FaceCrop]]]:
    """Per person: (set A, set B) of face crops; with ``wild``, also the people of the videos as
    people shoot them (``videos_wild``: 720p-1080p, small faces). A person with fewer than
    ``min_a`` / ``min_b`` usable crops is left out (logged)."""
    sets: Dict[str, Tuple[List[FaceCrop], List[FaceCrop]]] = {}
    case = folder_crops(SHARED / "rig_case1", landmarker)
    sets["rig_case1"] = (case[0::2], case[1::2])
    videos = sorted((SHARED / "videos").glob("*.mp4"))
    if wild:
        videos += sorted((SHARED / "videos_wild").glob("*.mp4"))
    for name, (a, b) in video_frame_sets(videos, landmarker).items():
        if len(a) < min_a or len(b) < min_b:
            logger.warning("%s left out: %d + %d frames with a face", name, len(a), len(b))
            continue
        sets[name] = (a, b)
    return sets


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held-out", type=int, default=4, help="set-B photos per person compared")
    parser.add_argument("--no-wild", action="store_true", help="leave out the people of videos_wild")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not (SHARED / "rig_case1").is_dir():
        print(f"(skipped: {SHARED / 'rig_case1'} absent)")
        return 0
    torch.set_num_threads(1)
    start = time.perf_counter()
    model = load_face_model("ict", ROOT / "external" / "ICT-FaceKit")
    face = model.region("face")
    recogniser = FaceRecogniser()
    sets = people(FaceLandmarker("dlib"), wild=not args.no_wild)
    names = list(sets)
    rigs = {n: textured(sets[n][0], model, face, "dlib") for n in names}
    mean = mean_face(model, face)
    kinds = (("textured", True), ("per-vertex albedo", False))
    renderers = {(q, kind): RigRenderer(rigs[q], textured=with_texture) for q in names for kind, with_texture in kinds}
    mean_renderer = RigRenderer(mean)
    trackers = {q: RigTracker(rig, face, TrackerConfig()) for q, rig in [*rigs.items(), ("mean face", mean)]}

    def fit(q: str, crop: FaceCrop) -> FrameTrack:
        """Rig ``q`` fitted to the photo (one tracker step from scratch: expression, pose, SH light)."""
        trackers[q].reset()
        return trackers[q].step(crop.landmarks_crop, crop.image)

    reference = {n: [recogniser.descriptor(c.image, c.landmarks_crop) for c in sets[n][0]] for n in names}
    tables = {kind: {} for kind, _ in kinds}
    for person in names:
        seen = {kind: ([], [], []) for kind, _ in kinds}  # own, others, rank of own
        mean_d, photo_same, photo_other = [], [], []
        for crop in sets[person][1][:args.held_out]:
            photo = recogniser.descriptor(crop.image, crop.landmarks_crop)
            tracks = {q: fit(q, crop) for q in names}  # each rig fitted once, drawn both ways
            for kind, _ in kinds:
                d = {q: distance(photo, recogniser.descriptor(
                    render_over(rigs[q], renderers[(q, kind)], tracks[q], crop), crop.landmarks_crop)) for q in names}
                own, others, ranks = seen[kind]
                own.append(d[person])
                others.extend(v for q, v in d.items() if q != person)
                ranks.append(1 + sum(v < d[person] for q, v in d.items() if q != person))
            mean_render = render_over(mean, mean_renderer, fit("mean face", crop), crop)
            mean_d.append(distance(photo, recogniser.descriptor(mean_render, crop.landmarks_crop)))
            photo_same.extend(distance(photo, r) for r in reference[person])
            photo_other.extend(distance(photo, r) for q in names if q != person for r in reference[q])
        for kind, (own, others, ranks) in seen.items():
            tables[kind][person] = (len(own), np.mean(own), np.mean(others), np.mean(np.array(ranks) == 1),
                                    np.mean(mean_d), np.mean(photo_same), np.mean(photo_other))
            logger.info("%s, %s: own %.3f, others %.3f, rank-1 %.2f", kind, person, np.mean(own), np.mean(others),
                        np.mean(np.array(ranks) == 1))
    for kind, rows in tables.items():
        print(f"\n### Recognised as the same person ({kind} rigs): dlib face descriptors, held-out photo vs "
              f"renders over it ({len(names)} people, {args.held_out} held-out photos each)\n")
        print("| person | photos | own rig | other people's rigs (mean) | own rig nearest (rank 1) | model's mean face "
              "| photo vs own set-A photos | photo vs others' photos |")
        print("|---|---|---|---|---|---|---|---|")
        for person, r in rows.items():
            print(f"| {person} | {r[0]} | **{r[1]:.3f}** | {r[2]:.3f} | {100 * r[3]:.0f} % | {r[4]:.3f} | {r[5]:.3f} | "
                  f"{r[6]:.3f} |")
        allr = np.array(list(rows.values()))
        weights = allr[:, 0] / allr[:, 0].sum()
        print(f"| **all** | {int(allr[:, 0].sum())} | **{weights @ allr[:, 1]:.3f}** | {weights @ allr[:, 2]:.3f} | "
              f"**{100 * weights @ allr[:, 3]:.0f} %** | {weights @ allr[:, 4]:.3f} | {weights @ allr[:, 5]:.3f} | "
              f"{weights @ allr[:, 6]:.3f} |")
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
