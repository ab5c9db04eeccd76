"""Where the project's own folders are: the repository root, ``external/`` (third-party face model
files users drop in) and ``net_weights/`` (trained weights and measured landmark noise).

The project is installed editable (``make setup``), so these are folders of the checkout.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["REPO_ROOT", "EXTERNAL_DIR", "NET_WEIGHTS_DIR", "EXAMPLES_DIR", "SHARED_DATA_DIR"]

REPO_ROOT = Path(__file__).resolve().parents[1]
EXTERNAL_DIR = REPO_ROOT / "external"
NET_WEIGHTS_DIR = REPO_ROOT / "net_weights"
#: Small example inputs shipped with the project: ``photos/`` and ``driver.mp4`` (examples/README.md).
EXAMPLES_DIR = REPO_ROOT / "examples"
#: Development data beside the checkout (``../shared/data``); absent on users' machines.
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
