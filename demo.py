"""Riggable 3D face reconstruction demo: edit the paths below (or pass flags) and run it.

    python demo.py                       # defaults below
    python demo.py --model ict --out out/demo

Stage by stage as the project grows (see README.md, "Status"): today it prepares the face model,
prints a summary of it and writes the model's neutral mesh to ``<out>/mesh/``. Rig building from
``rig_img_dir``, video tracking of ``src_vid_path`` and retargeting arrive with the solver issues.
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
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import trimesh

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
    mesh_dir = args.out / "mesh"
    mesh_dir.mkdir(parents=True, exist_ok=True)
    neutral = mesh_dir / "model_neutral.obj"
    trimesh.Trimesh(model.neutral.numpy(), model.triangles.numpy(), process=False).export(neutral)
    print(f"wrote the model's neutral mesh to {neutral}")
    logger.info("rig building from %s and tracking of %s are not available yet (see README.md, Status)",
                args.rig_dir, args.video)
    return 0


if __name__ == "__main__":
    sys.exit(main())
