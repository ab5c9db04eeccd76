"""The README's Python blocks and examples/quickstart.ipynb run as a newcomer runs them: from another
folder, in order, top to bottom, writing nothing into the repository."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
NOTEBOOK = REPO_ROOT / "examples" / "quickstart.ipynb"
SKIP_DIRS = {".git", ".venv", "external", "__pycache__", ".pytest_cache", "build"}


def _tree() -> dict:
    """Every file of the checkout (but caches and the face model) with its modification time."""
    files = {}
    for root, dirs, names in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in names:
            path = Path(root) / name
            files[str(path.relative_to(REPO_ROOT))] = path.stat().st_mtime_ns
    return files


def _env() -> dict:
    """This checkout first on the path, as `make setup`'s editable install puts it for a user."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def _need_checkout_model(ict_dir: Path) -> None:
    from utils.get_face_model import ICT_DIR

    if Path(ict_dir) != ICT_DIR:
        pytest.skip(f"the README and the notebook load the model from {ICT_DIR} (make model), absent here")


def test_readme_python_blocks_run_in_order_from_another_folder(tmp_path, ict_dir):
    _need_checkout_model(ict_dir)
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 4
    script = tmp_path / "readme_blocks.py"
    script.write_text("\n".join(blocks))
    before = _tree()
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr, done.stderr[-2000:]
    after = _tree()
    assert {k: v for k, v in after.items() if before.get(k) != v} == {}  # nothing written into the checkout
    out = done.stdout
    assert "model ict: 26719 vertices" in out
    assert "['d3_frame000', 'd3_frame050'" in out          # the example photos, all used
    assert "10 0 ['animation.glb', 'animation_arkit.csv'" in out  # 10 frames tracked, none flagged, exports


def test_quickstart_notebook_runs_top_to_bottom(tmp_path, ict_dir, monkeypatch):
    _need_checkout_model(ict_dir)
    nbformat = pytest.importorskip("nbformat", reason="nbformat is in requirements_pip.txt")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is in requirements_pip.txt")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)  # saved without outputs
    for key, value in _env().items():
        monkeypatch.setenv(key, value)  # the kernel inherits it
    before = _tree()
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert {k: v for k, v in _tree().items() if before.get(k) != v} == {}
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 3  # two photos with their fits, one frame: video | tracked mesh | driven rig
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "8 frames tracked" in text
    errors = [float(v) for v in re.findall(r"'d3_frame\d+': ([0-9.]+)", text)]
    assert len(errors) == 6 and max(errors) < 5.0  # landmark fit error in crop px of every photo
    assert re.search(r"^00:00:00:00\.000,61,", text, flags=re.M)  # the CSV's first row
