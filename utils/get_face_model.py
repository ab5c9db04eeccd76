"""Prepare a face model under ``external/`` and print a summary of it.

    python -m utils.get_face_model ict            # ICT-FaceKit (open, MIT licence)
    python -m utils.get_face_model bfm2009 --path external/BFM
    python -m utils.get_face_model face3d --path external/face3d/examples/Data/BFM/Out

For ICT the command, in this order: uses an existing ``external/ICT-FaceKit/``; else unpacks the
archive (.tar.xz, .tar.gz, .zip) or copies the folder named by ``INORIG_ICT_SOURCE``; else downloads
the ICT-FaceKit repository from GitHub (never when ``INORIG_OFFLINE=1``, as in tests and CI). It then
loads the model once, which writes the converted cache, so later loads take a fraction of a second.
BFM files are licensed: users obtain them themselves (see README.md); the command checks and summarises.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Optional

from core.face_model.ict import ICT_DOWNLOAD_HINT, ict_model_dir
from core.face_model.load import load_face_model
from core.face_model.model import FaceModelError
from utils.paths import EXTERNAL_DIR

logger = logging.getLogger(__name__)

ICT_DIR = EXTERNAL_DIR / "ICT-FaceKit"
ICT_URL = "https://github.com/ICT-VGL/ICT-FaceKit/archive/refs/heads/master.zip"
DEFAULT_PATHS = {
    "ict": ICT_DIR,
    "bfm2009": EXTERNAL_DIR / "BFM",
    "face3d": EXTERNAL_DIR / "face3d" / "examples" / "Data" / "BFM" / "Out",
}


def has_ict(path: Path) -> bool:
    try:
        ict_model_dir(path)
        return True
    except FaceModelError:
        return False


def _unpack(archive: Path, dest: Path) -> None:
    """Unpack a .tar(.xz/.gz/.bz2) or .zip archive into ``dest``."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
    else:
        raise FaceModelError(f"{archive} is neither a tar nor a zip archive")


def _install_from(unpacked: Path, target: Path) -> None:
    """Find the ICT-FaceKit root (the folder holding FaceXModel/) inside ``unpacked``; move it to target."""
    roots = [p.parent for p in unpacked.rglob("FaceXModel") if (p / "generic_neutral_mesh.obj").is_file()]
    if not roots:
        raise FaceModelError(f"no FaceXModel/generic_neutral_mesh.obj inside {unpacked}. " + ICT_DOWNLOAD_HINT)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(roots[0]), str(target))


def prepare_ict(target: Path = ICT_DIR, source: Optional[str] = None, offline: Optional[bool] = None) -> Path:
    """Make sure the ICT-FaceKit files are at ``target``; return that path."""
    if has_ict(target):
        logger.info("using the ICT-FaceKit model at %s", target)
        return target
    if target.exists() and any(target.iterdir()):
        raise FaceModelError(f"{target} exists but holds no FaceXModel/generic_neutral_mesh.obj; "
                             f"remove it and run again. " + ICT_DOWNLOAD_HINT)
    source = source if source is not None else os.environ.get("INORIG_ICT_SOURCE")
    offline = offline if offline is not None else os.environ.get("INORIG_OFFLINE") == "1"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp_path = Path(tmp)
        if source:
            src = Path(source).expanduser()
            if src.is_dir():
                logger.info("copying the ICT-FaceKit model from %s", src)
                shutil.copytree(src, tmp_path / src.name)
            elif src.is_file():
                logger.info("unpacking the ICT-FaceKit model from %s", src)
                _unpack(src, tmp_path)
            else:
                raise FaceModelError(f"INORIG_ICT_SOURCE={source} is neither a file nor a folder. "
                                     + ICT_DOWNLOAD_HINT)
        elif offline:
            raise FaceModelError(f"the ICT-FaceKit model is not at {target} and downloads are off "
                                 f"(INORIG_OFFLINE=1). " + ICT_DOWNLOAD_HINT)
        else:
            archive = tmp_path / "ICT-FaceKit.zip"
            logger.info("downloading %s", ICT_URL)
            try:
                urllib.request.urlretrieve(ICT_URL, archive)
            except OSError as err:
                raise FaceModelError(f"could not download {ICT_URL} ({err}). " + ICT_DOWNLOAD_HINT) from err
            _unpack(archive, tmp_path)
        _install_from(tmp_path, target)
    return target


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(DEFAULT_PATHS), help="face model kind")
    parser.add_argument("--path", type=Path, default=None, help="model folder (default: under external/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = args.path or DEFAULT_PATHS[args.kind]
    try:
        if args.kind == "ict":
            path = prepare_ict(path)
        start = time.perf_counter()
        model = load_face_model(args.kind, path)
        elapsed = time.perf_counter() - start
    except FaceModelError as err:
        logger.error("%s", err)
        return 1
    print(model.summary())
    print(f"  loaded in {elapsed:.2f} s from {path}")
    if "face" in model.regions and args.kind == "ict":
        face = model.region("face")
        print(f"  fitting region 'face': {face.n_vertices} vertices, {len(face.triangles)} triangles")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
