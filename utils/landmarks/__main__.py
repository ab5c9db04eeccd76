"""``python -m utils.landmarks DIR --out OUTDIR``: landmarks of every face of every image in a folder.

Writes ``OUTDIR/landmarks.json`` (format `LANDMARKS_FORMAT_VERSION`): per image its size and every
face found, left to right, with its box, 68 points, score and detector, the pixel convention, and
which face a pipeline would take (``--face``). ``--overlays`` also writes one PNG per image with
every face drawn (the chosen one in green, the others in orange).

Exit status: 0 done, 1 bad input (one line naming the folder and the problem), 2 usage.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from utils.landmarks.base import BACKENDS, DEFAULT_BACKEND, PIXEL_CONVENTION, LandmarkError

logger = logging.getLogger("utils.landmarks")

#: ``landmarks.json``: 1 (this layout).
LANDMARKS_FORMAT_VERSION = 1


def _face_record(index: int, face: Any, detector: str) -> dict:
    return {"index": index, "box": [round(float(v), 3) for v in face.bbox],
            "landmarks": np.round(face.landmarks, 3).tolist(),
            "score": None if face.confidence is None else round(float(face.confidence), 4),
            "detector": detector}


def landmark_file(found: Any, folder: Path, detector: str, rule: str) -> dict:
    """The ``landmarks.json`` document of a `utils.landmarks.detect.FolderFaces`."""
    images = {}
    for path, faces in found.all_faces.items():
        choice = found.choices.get(path)
        images[path.name] = {"faces": [_face_record(i, f, detector) for i, f in enumerate(faces)],
                             "chosen": None if choice is None else choice.chosen}
        if choice is not None:
            chosen = next(f for p, _, f in found.faces if p == path)
            images[path.name]["chosen_landmarks"] = np.round(chosen.landmarks, 3).tolist()
            images[path.name]["chosen_box"] = [round(float(v), 3) for v in chosen.bbox]
        images[path.name]["width"], images[path.name]["height"] = found.sizes[path]
    for path, why in found.skipped.items():
        images.setdefault(path.name, {"faces": [], "chosen": None})["skipped"] = why
    return {"format_version": LANDMARKS_FORMAT_VERSION, "folder": str(folder), "detector": detector,
            "face_rule": rule, "points": "iBUG 68, in the iBUG / Multi-PIE order",
            "pixel_convention": PIXEL_CONVENTION,
            "faces_order": "left to right by box centre; 'index' is the number --face N takes",
            "chosen_landmarks": "the chosen face landmarked again at a scale that suits it "
                                "(what the rig uses)",
            "images": images}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m utils.landmarks",
                                description="68-point landmarks of every face in every image of a folder: "
                                            "OUT/landmarks.json, and overlays with --overlays.")
    p.add_argument("folder", type=Path, help="folder of images (jpg, png, bmp, webp, tif, heic)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                   help=f"landmark detector (default {DEFAULT_BACKEND}, offline)")
    p.add_argument("--detector", default="hog", choices=["hog", "cnn"], help="dlib face detector")
    p.add_argument("--face", default="largest",
                   help="which face a pipeline takes where an image has several: largest, central, "
                        "confident, or N (the N-th from the left, from 0); recorded as 'chosen'")
    p.add_argument("--overlays", action="store_true", help="also write one overlay PNG per image")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: landmark every face of every image of a folder; write ``landmarks.json`` (and overlays)."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from utils.landmarks.detect import parse_selection

    try:
        select = parse_selection(args.face)
    except LandmarkError as err:
        parser.error(str(err))
    if not args.folder.is_dir():
        print(f"error: {args.folder}: no such folder of images", file=sys.stderr)
        return 1
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"error: --out {args.out}: cannot create the folder ({err.strerror or err})", file=sys.stderr)
        return 1

    import cv2

    from utils.landmarks.detect import FaceLandmarker, detect_folder
    from utils.landmarks.drawing import draw_bbox, draw_landmarks

    try:
        landmarker = FaceLandmarker(args.backend, detector=args.detector)
    except LandmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    found = detect_folder(args.folder, landmarker, select)
    document = landmark_file(found, args.folder, landmarker.backend, str(select))
    written = args.out / "landmarks.json"
    written.write_text(json.dumps(document, indent=1))
    if args.overlays:
        chosen_faces = {p: (img, face) for p, img, face in found.faces}
        stems = [p.stem for p in found.all_faces]
        for path, faces in found.all_faces.items():
            if path not in chosen_faces:
                continue
            image, chosen_face = chosen_faces[path]
            size = max(1, round(max(image.shape[:2]) / 384))  # visible on large photos too
            chosen = found.choices[path].chosen
            # the others in orange, the chosen one (as landmarked for the rig) in green
            for i, face in enumerate(faces):
                shown, colour = (chosen_face, (0, 255, 0)) if i == chosen else (face, (255, 160, 0))
                boxed = draw_bbox(image, shown.bbox, color=colour, thickness=size)
                image = draw_landmarks(boxed, shown.landmarks, color=colour, radius=size)
            name = path.stem if stems.count(path.stem) == 1 else path.name
            cv2.imwrite(str(args.out / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    n_faces = sum(len(f) for f in found.all_faces.values())
    logger.info("%s: %d faces in %d images (backend %s); %d images skipped%s", written, n_faces,
                len(found.all_faces), landmarker.backend, len(found.skipped),
                "; overlays beside it" if args.overlays else "")
    return 0 if found.faces else 1


if __name__ == "__main__":
    sys.exit(main())
