"""Benchmark: faces in wide and group photos (issue 16, findings 7 and 8).

1. Group photos (``../shared/data/real/images``): faces found per image by the video path's fast
   search (a downscaled copy first, as every photo was searched before) and by the photo path's
   full search at the image's own scale (`utils.landmarks.detect.FULL_MAX_SIDE`).
2. A face beside another face: each rig_case1 photo (256 px, the face near the border) with a second
   face to its right (resized to 191 or 256 px wide: 447 or 512 px images). The chosen face's 68
   points against those of the photo alone, mean distance in % of its outer-eye-corner distance:
   before (fast search, landmarks predicted on the whole image with the detection's box) and after
   (full search, then `FaceLandmarker.at_face_scale`: detected and predicted again on a window
   resized so that the face is `FACE_SCALE_PX` wide).
3. Synthetic renders with ground truth (`utils.synthetic`, 4 subjects x 8 images, 256 px): 68-point
   NME of the photo alone, before and after, so that the re-landmarking costs no accuracy.

Usage:
    python -m benchmarks.bench_face_scale
"""
from __future__ import annotations

import sys
import time

import cv2
import numpy as np

from utils.io.images import read_image
from utils.landmarks.detect import FaceLandmarker, select_face
from utils.paths import SHARED_DATA_DIR


def _nme(points: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(points - truth, axis=1).mean() / np.linalg.norm(truth[36] - truth[45]))


def main() -> int:
    real = SHARED_DATA_DIR / "real"
    if not real.is_dir():
        print(f"error: {real}: the development data is not here", file=sys.stderr)
        return 1
    lm = FaceLandmarker("dlib")
    print("| image | size | faces, fast search | faces, full search | full search time (s) |")
    print("| --- | --- | --- | --- | --- |")
    for path in sorted((real / "images").glob("*.jpg")):
        image = read_image(path)
        fast = len(lm.detect(image))
        start = time.perf_counter()
        full = len(lm.detect(image, search="full"))
        print(f"| {path.name} | {image.shape[1]}x{image.shape[0]} | {fast} | {full} | "
              f"{time.perf_counter() - start:.2f} |")

    other = read_image(real / "images" / "JianzhuGuo.jpg")
    print("\n| second face width | images | before: mean / max NME (%) | after: mean / max NME (%) |")
    print("| --- | --- | --- | --- |")
    for width in (191, 256):
        before, after = [], []
        for path in sorted((real / "rig_case1").glob("*.jpg")):
            alone_image = read_image(path)
            alone = lm.at_face_scale(alone_image, lm.detect(alone_image, search="full")[0]).landmarks
            alone_before = lm.detect(alone_image)[0].landmarks
            wide = np.ascontiguousarray(np.concatenate([alone_image, cv2.resize(other, (width, 256))], axis=1))
            old = select_face(lm.detect(wide), wide.shape, 0).landmarks
            new = lm.at_face_scale(wide, select_face(lm.detect(wide, search="full"), wide.shape, 0)).landmarks
            before.append(100 * _nme(old, alone_before))
            after.append(100 * _nme(new, alone))
        print(f"| {width} px ({256 + width} px image) | {len(before)} | {np.mean(before):.2f} / {np.max(before):.1f} "
              f"| {np.mean(after):.2f} / {np.max(after):.1f} |")

    from core.face_model.load import load_face_model
    from utils.get_face_model import ICT_DIR
    from utils.synthetic.generator import SyntheticGenerator
    from utils.synthetic.truth import detector_landmarks

    model = load_face_model("ict", ICT_DIR)
    face = model.region("face")
    generator = SyntheticGenerator(model)
    before, after = [], []
    for seed in (1, 2, 3, 4):
        subject = generator.subject(8, seed=seed)
        truth = detector_landmarks(face, subject)
        for image, points in zip(subject.images, truth):
            found = lm.detect(image)
            if found:
                before.append(100 * _nme(found[0].landmarks, points))
                after.append(100 * _nme(lm.at_face_scale(image, lm.detect(image, search="full")[0]).landmarks, points))
    print("\n| synthetic renders (truth) | faces | before: mean / median / max NME (%) | after |")
    print("| --- | --- | --- | --- |")
    print(f"| 4 subjects x 8 | {len(before)} | {np.mean(before):.2f} / {np.median(before):.2f} / {np.max(before):.1f} "
          f"| {np.mean(after):.2f} / {np.median(after):.2f} / {np.max(after):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
