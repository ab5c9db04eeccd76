"""``python -m utils.landmarks DIR --out OUTDIR``: landmarks of every image in a folder."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import cv2

from utils.landmarks.detect import FaceLandmarker, detect_folder

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: landmark every image of a folder and write one overlay PNG per image."""
    from utils.landmarks.drawing import draw_bbox, draw_landmarks

    parser = argparse.ArgumentParser(prog="python -m utils.landmarks",
                                     description="68-point landmarks for every image of a folder; "
                                                 "writes one overlay PNG per image.")
    parser.add_argument("folder", type=Path, help="folder of jpg/png/bmp/webp images")
    parser.add_argument("--out", type=Path, required=True, help="output folder for overlays")
    parser.add_argument("--backend", default="auto", choices=["auto", "dlib", "face_alignment", "mediapipe"])
    parser.add_argument("--detector", default="hog", choices=["hog", "cnn"],
                        help="dlib face detector")
    parser.add_argument("--select", default="largest", choices=["largest", "confident", "central"],
                        help="which face to keep where an image has several")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    landmarker = FaceLandmarker(args.backend, detector=args.detector)
    found = detect_folder(args.folder, landmarker, args.select)
    args.out.mkdir(parents=True, exist_ok=True)
    stems = [path.stem for path, _, _ in found.faces]
    for path, image, face in found.faces:
        name = path.stem if stems.count(path.stem) == 1 else path.name
        size = max(1, round(max(image.shape[:2]) / 256))  # visible on large photos too
        overlay = draw_landmarks(draw_bbox(image, face.bbox, thickness=size), face.landmarks,
                                 radius=size + 1)
        cv2.imwrite(str(args.out / f"{name}.png"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
    logger.info("%d overlays written to %s (backend %s); %d images skipped", len(found.faces),
                args.out, landmarker.backend, len(found.skipped))
    return 0 if found.faces else 1
