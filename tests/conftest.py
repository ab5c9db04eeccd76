"""Shared fixtures: paths to the development data in ../shared and the prepared face models.

Tests that need ../shared skip with a clear reason where it is absent. No test touches the network:
INORIG_OFFLINE=1 is set for the whole session.
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # torch is imported where a test needs it
    import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
ICT_ARCHIVE = SHARED / "data" / "face_models" / "ICT-FaceKit.tar.xz"

os.environ["INORIG_OFFLINE"] = "1"
# Before torch is imported: OpenMP threads that spin while waiting stall badly on a shared 2-core
# machine (see docs/benchmarks.md, Solver).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Results the code keeps on disk between runs (core.cache.StoredResults): a folder of this session's,
# shared by the runs it starts, so that tests read both computed and stored results.
_RESULTS_DIR = tempfile.mkdtemp(prefix="inorig-test-results-")
os.environ.setdefault("INORIG_RESULTS_DIR", _RESULTS_DIR)
atexit.register(shutil.rmtree, _RESULTS_DIR, True)


def imports_module(code: str, module: str) -> bool:
    """Whether running ``code`` in a fresh interpreter at the repository root imports ``module``
    (start-up cost checks: a module that is not needed must not be loaded)."""
    done = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint({module!r} in sys.modules)\n"],
                          capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    return done.stdout.strip().splitlines()[-1] == "True"


def grid_triangles(columns: int, rows: int) -> torch.Tensor:
    """The triangles of a ``rows`` x ``columns`` grid of vertices numbered row by row: two per square,
    counter-clockwise seen from +z. -> (2 (rows - 1) (columns - 1), 3) int64."""
    import torch

    corner = (torch.arange(rows - 1)[:, None] * columns + torch.arange(columns - 1)[None]).reshape(-1)
    pairs = torch.stack([torch.stack([corner, corner + 1, corner + columns + 1], 1),
                         torch.stack([corner, corner + columns + 1, corner + columns], 1)], 1)
    return pairs.reshape(-1, 3)


def x264_options(path: Path) -> dict[str, str]:
    """The encoder settings x264 wrote into an H.264 file (its SEI text ``x264 - core ... options: ...``)."""
    data = Path(path).read_bytes()
    start = data.find(b"x264 - core")
    assert start >= 0, f"{path}: no x264 settings in the stream"
    text = data[start:start + 4000].split(b"\x00")[0].decode("latin-1")
    return dict(item.split("=", 1) for item in text.split("options:", 1)[1].split() if "=" in item)


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath("data", *parts)
    if not path.exists():
        pytest.skip(f"development data {path} is absent (tests read it from ../shared beside the clone)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (skips when absent)."""
    return shared_path()


@pytest.fixture(scope="session")
def ict_dir(tmp_path_factory) -> Path:
    """A prepared ICT-FaceKit folder: the repository's external/ICT-FaceKit, else unpacked from ../shared."""
    from utils.get_face_model import ICT_DIR, has_ict, prepare_ict

    if has_ict(ICT_DIR):
        return ICT_DIR
    if not ICT_ARCHIVE.is_file():
        pytest.skip(f"no ICT-FaceKit model: neither {ICT_DIR} nor the archive {ICT_ARCHIVE} exists")
    return prepare_ict(tmp_path_factory.mktemp("ict") / "ICT-FaceKit", source=str(ICT_ARCHIVE))


@pytest.fixture(scope="session")
def ict_model(ict_dir):
    """The full ICT model (26,719 vertices), float32."""
    from core.face_model.load import load_face_model

    return load_face_model("ict", ict_dir)


@pytest.fixture(scope="session")
def ict_face(ict_model):
    """The ICT face area (9,409 vertices), the region used for fitting."""
    return ict_model.region("face")
