"""Convert existing outputs without re-running anything.

    python -m utils.export RIG.npz [--tracking tracking.npz] --out DIR [--format glb csv]
                           [--names arkit|model] [--sparse] [--quantize]

Writes ``DIR/rig.glb``; with ``--tracking`` also ``DIR/animation.glb`` and ``DIR/animation_arkit.csv``.
Exit status: 0 done, 1 bad input (one line on stderr naming the file and the problem), 2 usage.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from core.rig.rig import RigFileError
from utils.export.errors import ExportError
from utils.export.gltf import GltfOptions
from utils.export.outputs import FORMATS, export_files
from utils.io.tracking import TrackingFileError

logger = logging.getLogger("utils.export")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m utils.export", description=__doc__.split("\n\n")[0])
    p.add_argument("rig", type=Path, help="rig.npz written by the demo (core.rig.Rig.save)")
    p.add_argument("--tracking", type=Path, help="videos/tracking.npz: also write animation.glb and the CSV")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS), dest="formats",
                   help="what to write (default: all)")
    p.add_argument("--names", choices=("arkit", "model"), default="arkit",
                   help="morph target names: ARKit's (eyeBlinkLeft, split halves merged) or the model's own")
    p.add_argument("--sparse", action="store_true",
                   help="store morph targets as sparse accessors (the default for a whole-head rig)")
    p.add_argument("--quantize", action="store_true", help="int16 positions and targets (KHR_mesh_quantization)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is written")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)  # usage errors exit with 2
    if args.tracking is None and set(args.formats) == {"csv"}:
        parser.error("--format csv needs --tracking")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        options = GltfOptions(sparse=args.sparse, quantize=args.quantize) if args.sparse or args.quantize else None
        written = export_files(args.rig, args.out, args.tracking, args.formats, args.names, options)
    except (RigFileError, TrackingFileError, ExportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
