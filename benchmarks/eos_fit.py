"""The eos side of bench_eos.py: landmark-based 3DMM fitting of photos with eos (Surrey Face Model).

Runs in eos's own virtual environment (a benchmark dependency, not one of the project's), e.g.

    /work/tools/eos-venv/bin/python benchmarks/eos_fit.py ../shared/data/real/rig_case1 --out eos.json

(venv: python3.11 -m venv /work/tools/eos-venv && /work/tools/eos-venv/bin/pip install eos-py==1.5.0
numpy opencv-python-headless dlib-bin face-recognition-models "setuptools<81").
It imports nothing from the project, so it runs without torch.

For each photo (a folder's images in name order, or the files given):
1. dlib's 68 landmarks, detected as the project's default landmarker does (`utils.landmarks`,
   backend 'dlib'): HOG frontal detector, images of at most 320 px upsampled 2x, larger ones
   tried at 384 px first and at full size where that finds nothing; the largest face; the
   face-recognition-models 68-point predictor in the detector's box on the full image.
2. eos's fit of shape, pose (scaled orthographic camera) and expression blendshapes with its
   contour handling, as eos's own examples do: `eos.fitting.fit_shape_and_pose` with the shape
   model + expression blendshapes, the iBUG landmark mapper, the edge topology, the contour
   landmarks and the model contour (eos's defaults: 5 iterations, all 63 shape coefficients,
   lambda 30).

Writes JSON (``--out``, or stdout): the seconds per stage (``timings``: imports, model load,
detector load, reading images, landmarks, fitting, landmark projection, writing outputs) and
``total`` (from before the imports to just before the JSON is written; the interpreter's own
start-up is not included);
per image the detected 68 landmarks, the fitted model's 68 landmarks projected into the image
(see `fitted_landmarks` for the points eos's SFM does not define by a fixed vertex), the shape and
expression coefficients and the head pose; and ``neutral``: the mesh of the mean of the images'
shape coefficients without expressions (the "rig" of eos, which fits images one by one).
Coordinates are image pixels, (x, y) = (column, row), pixel centres at integers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

START = time.perf_counter()

EOS_SHARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "peers" / "eos"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
UPSAMPLE_MAX_SIDE = 320  # utils.landmarks: images up to this side are upsampled 2x for detection
DETECT_MAX_SIDE = 384  # ... larger ones are tried at this side first
RIGHT_CONTOUR = list(range(0, 8))  # iBUG 1-8 (0-based), eos's "right" contour landmarks
LEFT_CONTOUR = list(range(9, 17))  # iBUG 10-17
# iBUG points without a vertex in ibug_to_sfm.txt (the inner mouth corners 61 and 65; the SFM has
# no mouth interior): projected at the mouth-corner vertices of points 49 and 55.
UNMAPPED_STANDINS = {60: 48, 64: 54}


def image_files(inputs: Sequence[Path]) -> List[Path]:
    """Image files of ``inputs`` in the order given: a folder's images in name order, a file as it is."""
    files: List[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return files


class DlibLandmarker:
    """dlib HOG detector + the face-recognition-models 68-point predictor, as `utils.landmarks` uses them."""

    def __init__(self) -> None:
        import warnings

        import dlib
        with warnings.catch_warnings():  # its pkg_resources import warns on new setuptools
            warnings.simplefilter("ignore")
            import face_recognition_models
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

    @staticmethod
    def scales(side: int) -> List[float]:
        """Detection scales to try in turn (the project's rule for a whole image)."""
        if side <= UPSAMPLE_MAX_SIDE:
            return [2.0]
        first = min(1.0, DETECT_MAX_SIDE / side)
        return [first] if first == 1.0 else [first, 1.0]

    def detect(self, image_rgb: Any) -> Optional[Tuple[Tuple[float, ...], Any]]:
        """(box, (68, 2) landmarks) of the largest face of an (H, W, 3) uint8 RGB image, or None."""
        import cv2
        import numpy as np

        h, w = image_rgb.shape[:2]
        for scale in self.scales(max(h, w)):
            if scale == 1.0:
                scaled = image_rgb
            else:
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                scaled = cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            rects, _, _ = self.detector.run(scaled, 0, 0.0)
            if len(rects):
                boxes = [tuple((v + 0.5) / scale - 0.5 for v in (r.left(), r.top(), r.right(), r.bottom()))
                         for r in rects]
                box = max(boxes, key=lambda b: max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0))
                rect = self.dlib.rectangle(*(int(round(v)) for v in box))
                shape = self.predictor(image_rgb, rect)
                return box, np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return None


class EosFitter:
    """The Surrey Face Model with its expression blendshapes and eos's contour fitting data.

    Args:
        share: folder with sfm_shape_3448.bin, expression_blendshapes_3448.bin, ibug_to_sfm.txt,
            sfm_3448_edge_topology.json and sfm_model_contours.json (eos's share/ folder).
    """

    def __init__(self, share: Path) -> None:
        import eos
        import numpy as np

        self.eos = eos
        mm, fitting = eos.morphablemodel, eos.fitting
        model = mm.load_model(str(share / "sfm_shape_3448.bin"))
        blendshapes = mm.load_blendshapes(str(share / "expression_blendshapes_3448.bin"))
        self.shape_model = model.get_shape_model()
        self.model = mm.MorphableModel(self.shape_model, blendshapes, color_model=mm.PcaModel(),
                                       vertex_definitions=None,
                                       texture_coordinates=model.get_texture_coordinates())
        self.mapper = eos.core.LandmarkMapper(str(share / "ibug_to_sfm.txt"))
        self.edge_topology = mm.load_edge_topology(str(share / "sfm_3448_edge_topology.json"))
        self.contour_landmarks = fitting.ContourLandmarks.load(str(share / "ibug_to_sfm.txt"))
        self.model_contour = fitting.ModelContour.load(str(share / "sfm_model_contours.json"))
        contours = json.loads((share / "sfm_model_contours.json").read_text())["model_contour"]
        self.contour_vertices = {"right": np.array(contours["right_contour"]),
                                 "left": np.array(contours["left_contour"])}
        self.landmark_vertex = {int(k) - 1: int(v) for k, v in self.mapper.get_mappings().items()}
        self.triangles = np.asarray(self.shape_model.get_triangle_list(), dtype=np.int64)
        edges = np.asarray(self.edge_topology.adjacent_faces, dtype=np.int64)
        inner = (edges > 0).all(1)  # 1-based; 0 = no face (mesh boundary)
        self.edge_faces = edges[inner] - 1
        self.edge_vertices = np.asarray(self.edge_topology.adjacent_vertices, dtype=np.int64)[inner] - 1

    def fit(self, landmarks: Any, width: int, height: int) -> Tuple[Any, Any, List[float], List[float]]:
        """eos's fit of one image's (68, 2) landmarks: (mesh, rendering parameters, shape, expression coefficients)."""
        points = [self.eos.core.Landmark(str(i + 1), [float(x), float(y)]) for i, (x, y) in enumerate(landmarks)]
        return self.eos.fitting.fit_shape_and_pose(self.model, points, self.mapper, width, height, self.edge_topology,
                                                   self.contour_landmarks, self.model_contour)

    def fitted_landmarks(self, mesh: Any, pose: Any, width: int, height: int, detected: Any) -> Any:
        """The fitted model's 68 landmarks projected into the image, (68, 2).

        Points with a vertex in ibug_to_sfm.txt: that vertex. Inner mouth corners (61, 65; no
        vertex in the SFM): the mouth-corner vertices of 49 / 55. Contour points (1-8, 10-17),
        which eos matches to the model anew in every iteration: the projected point nearest to
        the detection among those eos matches them to, its model-contour vertices of that side
        and the fitted mesh's visible occluding-boundary vertices.
        """
        import numpy as np

        vertices = np.asarray(mesh.vertices, dtype=np.float64)
        camera = np.asarray(self.eos.fitting.get_3x4_affine_camera_matrix(pose, width, height), dtype=np.float64)
        screen = vertices @ camera[:, :3].T + camera[:, 3]
        uv = screen[:, :2] / screen[:, 2:3]
        out = np.zeros((68, 2))
        for i in range(68):
            j = UNMAPPED_STANDINS.get(i, i)
            if j in self.landmark_vertex:
                out[i] = uv[self.landmark_vertex[j]]
        cam = vertices @ np.asarray(pose.get_modelview(), dtype=np.float64)[:3, :3].T  # camera looks along -z
        silhouette = self.occluding_vertices(cam)
        triangles_uv, triangles_z = uv[self.triangles], cam[self.triangles][:, :, 2]
        hidden: Dict[int, bool] = {}
        for side, points in (("right", RIGHT_CONTOUR), ("left", LEFT_CONTOUR)):
            contour = set(self.contour_vertices[side].tolist())
            candidates = np.array(sorted(contour | set(silhouette.tolist())))
            for i in points:
                for k in np.argsort(np.linalg.norm(uv[candidates] - detected[i], axis=1)):
                    v = int(candidates[k])
                    if v not in contour:
                        if v not in hidden:
                            hidden[v] = self.is_hidden(v, cam[v, 2], uv[v], triangles_uv, triangles_z)
                        if hidden[v]:
                            continue
                    out[i] = uv[v]
                    break
        return out

    def occluding_vertices(self, cam: Any) -> Any:
        """Vertices of the fitted mesh's occluding edges (one adjacent face towards the camera,
        one away; camera-space vertices (V, 3)), where eos looks for the contour on the side
        turned away."""
        import numpy as np

        tri = cam[self.triangles]
        facing = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2] > 0
        boundary = facing[self.edge_faces[:, 0]] != facing[self.edge_faces[:, 1]]
        return np.unique(self.edge_vertices[boundary])

    def is_hidden(self, vertex: int, depth: float, point: Any, triangles_uv: Any, triangles_z: Any) -> bool:
        """Whether a triangle not touching ``vertex`` covers it in the image and lies in front of it
        there (self-occlusion, which eos's occluding-edge search also excludes).

        Args:
            vertex: index; depth: its camera z (larger = nearer); point: its (2,) image position.
            triangles_uv: (T, 3, 2) projected triangles; triangles_z: (T, 3) their corners' camera z.
        """
        import numpy as np

        near = np.flatnonzero((triangles_z.max(-1) > depth + 1e-3) & ~(self.triangles == vertex).any(1))
        t = triangles_uv[near]
        e1, e2, q = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0], point - t[:, 0]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        ok = np.abs(det) > 1e-12
        det = np.where(ok, det, 1.0)
        b1 = (q[:, 0] * e2[:, 1] - q[:, 1] * e2[:, 0]) / det
        b2 = (e1[:, 0] * q[:, 1] - e1[:, 1] * q[:, 0]) / det
        inside = ok & (b1 > 0) & (b2 > 0) & (b1 + b2 < 1)
        z = triangles_z[near]
        z_at = z[:, 0] + b1 * (z[:, 1] - z[:, 0]) + b2 * (z[:, 2] - z[:, 0])
        return bool((inside & (z_at > depth + 1e-3)).any())

    def neutral(self, shape_coefficients: Sequence[float]) -> Any:
        """The model's mesh (eos.core.Mesh) of the given shape coefficients, no expression."""
        n_expressions = len(self.model.get_expression_model())
        return self.model.draw_sample(list(map(float, shape_coefficients)), [0.0] * n_expressions, [])


def run(inputs: Sequence[Path], share: Path, obj: Optional[Path]) -> Dict[str, Any]:
    """The whole eos job on ``inputs``; returns the JSON-ready result (see the module docstring)."""
    timings: Dict[str, float] = {}
    tic = time.perf_counter()
    import cv2
    import dlib  # noqa: F401  (its import time belongs to the imports)
    import eos
    import numpy as np
    timings["imports"] = time.perf_counter() - tic

    tic = time.perf_counter()
    fitter = EosFitter(share)
    timings["model load"] = time.perf_counter() - tic
    tic = time.perf_counter()
    landmarker = DlibLandmarker()
    timings["detector load"] = time.perf_counter() - tic

    files = image_files(inputs)
    skipped: Dict[str, str] = {}
    images: Dict[Path, Any] = {}
    tic = time.perf_counter()
    for path in files:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # EXIF orientation applied, as the project's reader does
        if bgr is None:
            skipped[str(path)] = "cannot decode image"
        else:
            images[path] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    timings["reading images"] = time.perf_counter() - tic

    tic = time.perf_counter()
    detections: Dict[Path, Tuple[Any, Any]] = {}
    for path, image in images.items():
        found = landmarker.detect(image)
        if found is None:
            skipped[str(path)] = "no face found"
        else:
            detections[path] = found
    timings["landmarks"] = time.perf_counter() - tic

    tic = time.perf_counter()
    fits = {}
    for path, (_, lms) in detections.items():
        h, w = images[path].shape[:2]
        fits[path] = fitter.fit(lms, w, h)
    timings["fitting"] = time.perf_counter() - tic

    tic = time.perf_counter()
    per_image = []
    for path, (mesh, pose, shape, expression) in fits.items():
        h, w = images[path].shape[:2]
        box, detected = detections[path]
        per_image.append({
            "file": str(path), "width": w, "height": h, "box": list(box),
            "detected": detected.tolist(),
            "fitted": fitter.fitted_landmarks(mesh, pose, w, h, detected).tolist(),
            "shape_coefficients": list(map(float, shape)),
            "expression_coefficients": list(map(float, expression)),
            "yaw_pitch_roll_deg": [float(v) for v in pose.get_yaw_pitch_roll()],
        })
    timings["landmark projection"] = time.perf_counter() - tic

    tic = time.perf_counter()
    neutral = None
    if per_image:
        mean_shape = np.mean([r["shape_coefficients"] for r in per_image], axis=0)
        mesh = fitter.neutral(mean_shape)
        neutral = {"shape_coefficients": mean_shape.tolist(), "vertices": np.asarray(mesh.vertices).tolist(),
                   "triangles": fitter.triangles.tolist(), "units": "mm (the SFM's)"}
        if obj is not None:
            obj.parent.mkdir(parents=True, exist_ok=True)
            eos.core.write_obj(mesh, str(obj))
    timings["writing outputs"] = time.perf_counter() - tic  # the JSON itself is written after ``total``
    return {"tool": "eos", "eos_version": _version("eos-py"), "share": str(share), "timings": timings,
            "images": per_image, "skipped": skipped, "neutral": neutral}


def _version(distribution: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: fit every photo of the inputs and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, help="image folders and/or image files")
    parser.add_argument("--share", type=Path, default=EOS_SHARE,
                        help=f"eos's model files (default {EOS_SHARE})")
    parser.add_argument("--out", type=Path, default=None, help="JSON output file (default: stdout)")
    parser.add_argument("--obj", type=Path, default=None, help="also write the neutral mesh as OBJ here")
    args = parser.parse_args(argv)
    result = run(args.inputs, args.share, args.obj)
    result["total"] = time.perf_counter() - START
    text = json.dumps(result)
    if args.out is None:
        sys.stdout.write(text + "\n")
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0 if result["images"] else 1


if __name__ == "__main__":
    sys.exit(main())
