"""What a run did, in one place: ``summary.json`` and the table the demo prints at the end.

The document lists the inputs, the photos' rig (images used, skipped and flagged with the reason,
the face taken per image, fit errors in photo and crop pixels), the video (frames tracked, frames
without a face, the source rig's frames, cuts, figures), timings, versions and every file written.
The printed table (`summary_rows`) shows the same facts, each pixel figure naming its pixels.
"""
from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from utils.pipelines.rig import RigRun
from utils.pipelines.video import TrackingRun

__all__ = ["SUMMARY_FORMAT_VERSION", "OUTPUT_NOTES", "versions", "files_written", "stage_timings", "rig_section",
           "video_section", "summary_document", "write_summary", "shown", "summary_rows", "format_rows"]

#: ``summary.json``: 1 (this layout).
SUMMARY_FORMAT_VERSION = 1


def versions(*backends: Optional[str]) -> Dict[str, str]:
    """Versions of the project, Python and the packages that shape the results (the landmark
    backends used, photos' and video's)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("inorig", "torch", "numpy", "opencv-python", "pygltflib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    packages = {"dlib": "dlib-bin", "mediapipe": "mediapipe", "face_alignment": "face-alignment"}
    for backend in dict.fromkeys(b for b in backends if b in packages):
        package = packages[backend]
        try:
            out[f"landmarks ({backend})"] = f"{package} {metadata.version(package)}"
        except metadata.PackageNotFoundError:
            out[f"landmarks ({backend})"] = package
    return out


def files_written(out: Path, outputs: Dict[str, Path], since: float) -> List[str]:
    """Every file written by this run under ``out`` (folders listed file by file), relative to it."""
    files = set()
    for path in outputs.values():
        path = Path(path)
        candidates = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        for p in candidates:
            if p.is_file() and p.stat().st_mtime >= since - 1:
                try:
                    files.add(str(p.resolve().relative_to(out.resolve())))
                except ValueError:
                    files.add(str(p))
    return sorted(files)


def rig_section(rig_run: RigRun) -> Dict[str, Any]:
    """The photos' rig: images used, skipped and flagged, the face taken per image, fit errors."""
    return {
        "images_used": rig_run.used,
        "images_skipped": rig_run.skipped,
        "images_flagged": {stem: {"reason": why, "left_out": stem in rig_run.left_out}
                           for stem, why in rig_run.flagged.items()},
        "faces": {stem: {"faces_found": c.faces_found, "chosen_from_left": c.chosen, "rule": c.rule,
                         "box_photo_px": [round(v, 1) for v in c.bbox]}
                  for stem, c in rig_run.choices.items()},
        "landmark_error_photo_px": {k: round(v, 3) for k, v in rig_run.landmark_error.items()},
        "landmark_error_crop_px": {k: round(v, 3) for k, v in rig_run.landmark_error_crop.items()},
        "units": {"landmark_error_photo_px": "mean landmark distance, pixels of the photo",
                  "landmark_error_crop_px": "mean landmark distance, pixels of the 256 px face crop the fit "
                                            "sees",
                  "box_photo_px": "x0, y0, x1, y1 in pixels of the photo, pixel centres at integers"},
    }


def video_section(run: TrackingRun, source_frames: Optional[Sequence[int]],
                  cuts: Sequence[int]) -> Dict[str, Any]:
    """The video: frames tracked, frames without a face, the source rig's frames, cuts, figures."""
    fit = run.timings.get("tracking (fit + lighting)")
    error = None if math.isnan(run.mean_error) else round(run.mean_error, 5)
    return {"frames": run.frames, "frames_tracked": run.tracked, "frames_flagged_no_face": run.flagged_frames,
            "source_rig_frames": None if source_frames is None else list(source_frames), "cuts": list(cuts),
            "tracking_landmark_error_eye_distance": error,
            "tracking_fit_frames_per_s": round(run.frames / fit, 2) if fit else None, "error": run.error}


def stage_timings(doc: Dict[str, Any]) -> Tuple[Dict[str, float], Optional[float]]:
    """A summary document's stage times (s) and, apart, the run's own total (None where absent), as
    `summary_document` writes them under ``timings_s``: what the benchmarks read back.

    Example:
        >>> stage_timings({"timings_s": {"face model": 0.05, "rig: texture": 1.2, "total": 4.7}})
        ({'face model': 0.05, 'rig: texture': 1.2}, 4.7)
    """
    timings = dict(doc.get("timings_s") or {})
    return timings, timings.pop("total", None)


def summary_document(*, command: Sequence[str], inputs: Dict[str, Any], out: Path, driven: Optional[str],
                     error: Optional[str], rig_run: Optional[RigRun], video_run: Optional[TrackingRun],
                     source_frames: Optional[Sequence[int]], cuts: Sequence[int], timings: Dict[str, float],
                     outputs: Dict[str, Path], since: float) -> Dict[str, Any]:
    """``summary.json`` (format `SUMMARY_FORMAT_VERSION`): what a run did, every pixel figure naming
    its pixels; ``since`` is the run's start (``time.time()``) for `files_written`."""
    doc: Dict[str, Any] = {"format_version": SUMMARY_FORMAT_VERSION, "command": list(command),
                           "inputs": inputs, "driven_rig": driven, "error": error, "out": str(out)}
    if rig_run is not None:
        doc["rig"] = rig_section(rig_run)
    if video_run is not None:
        doc["video"] = video_section(video_run, source_frames, cuts)
    doc["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    doc["versions"] = versions(inputs.get("landmarks"), inputs.get("video_landmarks"))
    doc["outputs"] = {k: str(v) for k, v in outputs.items()}
    doc["files"] = sorted(set(files_written(out, outputs, since)) | {"summary.json"})
    return doc


def write_summary(doc: Dict[str, Any], path: Path) -> Path:
    """Write ``doc`` as JSON to ``path``."""
    path.write_text(json.dumps(doc, indent=1))
    return path


def shown(path: Union[str, Path, None]) -> str:
    """A path as the user would type it: relative to the current folder where it lies inside it."""
    if path is None:
        return ""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def summary_rows(doc: Dict[str, Any]) -> List[Tuple[str, str]]:
    """The end-of-run table printed by the demo (the same facts as ``summary.json``)."""
    rows: List[Tuple[str, str]] = []
    rig = doc.get("rig")
    if rig is not None:
        photos = shown(doc["inputs"]["photos"])
        rows.append(("photos' rig from", f"{len(rig['images_used'])} images of {photos}"))
        rows += [(f"  skipped {name}", why) for name, why in rig["images_skipped"].items()]
        for stem, flag in rig["images_flagged"].items():
            kept = " (left out)" if flag["left_out"] else " (kept)"
            rows.append((f"  flagged {stem}", flag["reason"] + kept))
        for stem, face in rig["faces"].items():
            if face["faces_found"] > 1:
                rows.append((f"  face taken in {stem}", f"{face['chosen_from_left']} from the left of "
                                                         f"{face['faces_found']} ({face['rule']})"))
        if rig["landmark_error_crop_px"]:
            crop = list(rig["landmark_error_crop_px"].values())
            photo = list(rig["landmark_error_photo_px"].values())
            mean_crop, mean_photo = sum(crop) / len(crop), sum(photo) / len(photo)
            rows.append(("rig landmark error, mean",
                         f"{mean_crop:.2f} crop px (256 px face crops) = {mean_photo:.2f} photo px"))
    if doc.get("driven_rig"):
        rows.append(("driven rig", shown(doc["driven_rig"])))
    video = doc.get("video")
    if video is not None:
        rows.append(("video", f"{shown(doc['inputs']['video'])}: {video['frames']} frames tracked"))
        rows.append(("  source rig frames", ", ".join(map(str, video["source_rig_frames"] or []))))
        flagged = video["frames_flagged_no_face"]
        which = f" ({_ranges(flagged)})" if flagged else ""
        rows.append(("  frames without a face", f"{len(flagged)}{which}"))
        if video["cuts"]:
            rows.append(("  cuts (face chosen again)", ", ".join(map(str, video["cuts"]))))
        if video["tracking_landmark_error_eye_distance"] is not None:
            error = 100 * video["tracking_landmark_error_eye_distance"]
            rows.append(("  tracking landmark error", f"{error:.2f}% of the eye distance"))
        if video["tracking_fit_frames_per_s"]:
            speed = video["tracking_fit_frames_per_s"]
            rows.append(("  tracking speed (fit + lighting)", f"{speed:.1f} frames/s"))
    rows += [(f"time: {stage}", f"{sec:.2f} s") for stage, sec in doc["timings_s"].items()]
    rows.append(("files written", f"{len(doc['files'])} under {shown(doc['out'])}"))
    for key, path in doc["outputs"].items():
        try:
            name = str(Path(path).resolve().relative_to(Path(doc["out"]).resolve()))
        except ValueError:
            name = str(path)
        name += "/" if Path(path).is_dir() else ""
        rows.append(("  " + name, OUTPUT_NOTES.get(key, "")))
    rows.append(("  summary.json", "this summary, with every file written"))
    return rows


#: What each output is, as the summary lists it.
OUTPUT_NOTES = {
    "rig": "the photos' rig: the whole head with eyes, teeth and mouth (numpy archive, mm)",
    "rig_texture": "its de-lit texture atlas (PNG; rig.npz and the textured OBJs use it)",
    "rig_textured": "its neutral head with the texture (OBJ + MTL, mm)",
    "textured_meshes": "each photo's fitted head with the texture (OBJ + MTL, mm)",
    "rig_glb": "the rig for 3D tools (glTF 2.0, metres, ARKit-named morph targets)",
    "rig_neutral": "its neutral mesh with albedo colours (OBJ, mm)",
    "mesh": "one mesh per photo (OBJ, mm, the model's vertex order)",
    "params": "one parameter file per photo (JSON; units inside)",
    "visualization": "photo with landmarks | fitted mesh over it | geometry",
    "source_rig": "the video person's rig",
    "input_clip": "the frames tracked",
    "output_recon": "the tracked mesh over the video",
    "output_exptrans": "the driven rig with its texture, pose and light as --retarget-pose / --retarget-light chose",
    "tracking": "per-frame expression, head pose, lighting (utils.io.tracking.load_tracking)",
    "animation_glb": "the driven rig animated (glTF 2.0, one key per frame)",
    "animation_csv": "the tracked weights as a Live Link Face CSV",
}


def _ranges(values: Sequence[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)


def format_rows(rows: List[Tuple[str, str]]) -> str:
    """The table as the demo prints it: labels in one column, values beside them."""
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)
