"""``python -m utils.synthetic --out DIR --subjects N --images M --seed S``: synthetic subjects on disk."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

from utils.synthetic.files import generate_dataset
from utils.synthetic.generator import SyntheticConfig

logger = logging.getLogger(__name__)

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: ``python -m utils.synthetic --out DIR --subjects N --images M --seed S``."""
    from core.face_model.load import load_face_model
    from utils.get_face_model import DEFAULT_PATHS

    parser = argparse.ArgumentParser(prog="python -m utils.synthetic",
                                     description="Write synthetic face crops with ground truth.")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--subjects", type=int, default=1, help="number of subjects")
    parser.add_argument("--images", type=int, default=8, help="images per subject")
    parser.add_argument("--seed", type=int, default=0, help="random seed (non-negative)")
    parser.add_argument("--kind", default="ict", choices=sorted(DEFAULT_PATHS),
                        help="face model kind")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="face model folder (default: the kind's folder under external/)")
    parser.add_argument("--size", type=int, default=256, help="crop side in pixels")
    parser.add_argument("--supersample", type=int, default=2,
                        help="anti-aliasing factor (1 = fastest)")
    parser.add_argument("--no-obj", action="store_true", help="skip the per-image OBJ meshes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for name in ("subjects", "images", "size", "supersample"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.seed < 0:
        parser.error(f"--seed must be non-negative, got {args.seed}")

    model = load_face_model(args.kind, args.model_dir or DEFAULT_PATHS[args.kind])
    config = SyntheticConfig(image_size=args.size, supersample=args.supersample)
    start = time.perf_counter()
    folders = generate_dataset(model, args.out, args.subjects, args.images, args.seed, config,
                               obj=not args.no_obj)
    logger.info("wrote %d subjects x %d images to %s in %.1f s", len(folders), args.images,
                args.out, time.perf_counter() - start)
    return 0
