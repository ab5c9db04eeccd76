"""Riggable 3D face reconstruction demo: edit the paths below (or pass flags) and run it.

    python demo.py                       # defaults below
    python demo.py --model ict --out out/demo

It prepares the face model, builds the person's rig from the photos in ``rig_img_dir`` and writes
``<out>/rig/rig.npz``, ``<out>/mesh/*.obj`` (object space, the model's vertex order),
``<out>/params/*.json`` and ``<out>/visualization/*.png``. Video tracking of ``src_vid_path`` and
retargeting arrive with the next issue (see README.md, "Status").
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "real"

# ---- Edit these, as in the original release ----------------------------------------------------
rig_img_dir = SHARED_DATA / "rig_case1"  # photos of one person that build the rig
src_vid_path = SHARED_DATA / "videos" / "d0.mp4"  # video that drives the rig
out_dir = REPO_ROOT / "out" / "demo"  # outputs: <out>/mesh, <out>/visualization, <out>/videos
model_kind = "ict"  # face model: ict (open), bfm2009 or face3d (licensed files in external/)
# -------------------------------------------------------------------------------------------------

logger = logging.getLogger("demo")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rig-dir", type=Path, default=rig_img_dir, help="folder of photos that build the rig")
    p.add_argument("--video", type=Path, default=src_vid_path, help="video that drives the rig")
    p.add_argument("--out", type=Path, default=out_dir, help="output folder")
    p.add_argument("--model", choices=["ict", "bfm2009", "face3d"], default=model_kind, help="face model kind")
    p.add_argument("--model-path", type=Path, default=None, help="face model folder (default: under external/)")
    p.add_argument("--max-images", type=int, default=None, help="use at most this many rig images")
    p.add_argument("--no-photometric", action="store_true", help="landmarks only (faster, less accurate)")
    return p.parse_args(argv)


def print_summary(run, out: Path) -> None:
    """The end-of-run table: images used / skipped, timings per stage, output paths."""
    rows = [("images used", str(len(run.used))), ("images skipped", str(len(run.skipped)))]
    rows += [(f"  skipped {name}", why) for name, why in run.skipped.items()]
    if run.landmark_error:
        rows.append(("landmark error (px, mean)", f"{sum(run.landmark_error.values()) / len(run.landmark_error):.2f}"))
    rows += [(f"time: {stage}", f"{sec:.2f} s") for stage, sec in run.timings.items()]
    rows += [(f"output: {name}", str(path)) for name, path in run.outputs.items()]
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{a:<{width}}  {b}" for a, b in rows))


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from core.morphable_model import FaceModelError, load_face_model
    from utils.get_face_model import DEFAULT_PATHS, prepare_ict

    path = args.model_path or DEFAULT_PATHS[args.model]
    try:
        if args.model == "ict":
            path = prepare_ict(path)
        model = load_face_model(args.model, path)
    except FaceModelError as err:
        logger.error("%s", err)
        return 1
    print(model.summary())
    from core.rig_builder import RigBuildConfig
    from utils.rig_pipeline import RigInputError, build_rig_from_folder

    fit_model = model.region("face") if "face" in model.regions and args.model == "ict" else model
    try:
        run = build_rig_from_folder(args.rig_dir, args.out, fit_model, max_images=args.max_images,
                                    config=RigBuildConfig(photometric=not args.no_photometric))
    except RigInputError as err:
        logger.error("%s", err)
        return 1
    print_summary(run, args.out)
    if args.video:
        logger.info("video tracking of %s and retargeting are not available yet (see README.md, Status)",
                    args.video)
    return 0


if __name__ == "__main__":
    sys.exit(main())
