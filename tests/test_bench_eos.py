"""The eos benchmark's own pieces that run without eos: its dlib detection matches the project's
(so both sides of benchmarks/bench_eos.py fit the same landmarks), and its parsers and measures."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_eos import _profiled, children_cpu, import_costs, landmark_errors, run_timed
from benchmarks.eos_fit import DlibLandmarker, image_files
from tests.conftest import shared_path


def test_detection_matches_project_landmarker() -> None:
    """eos_fit's copy of the detection rule gives the project's dlib landmarks exactly, on small
    photos (upsampled 2x) and on a larger frame (downscaled first pass)."""
    pytest.importorskip("dlib")
    from utils.io.images import read_image
    from utils.landmarks.detect import FaceLandmarker

    files = image_files([shared_path("real", "rig_case1")])[:3]
    ours, theirs = FaceLandmarker("dlib"), DlibLandmarker()
    images = [read_image(f) for f in files]
    big = np.ascontiguousarray(np.kron(images[0], np.ones((2, 2, 1), dtype=np.uint8)))  # 512 px: the 384 px pass
    for image in [*images, big]:
        expected = ours.detect(image)[0]
        box, landmarks = theirs.detect(image)
        np.testing.assert_allclose(box, expected.bbox)
        np.testing.assert_array_equal(landmarks, expected.landmarks)


def test_detection_scales() -> None:
    """The project's scale rule: 2x up to 320 px, a 384 px pass first above that."""
    assert DlibLandmarker.scales(256) == [2.0]
    assert DlibLandmarker.scales(384) == [1.0]
    assert DlibLandmarker.scales(768) == [0.5, 1.0]


def test_landmark_errors_normalised_by_eye_corners() -> None:
    detected = np.zeros((68, 2))
    detected[36], detected[45] = (0.0, 0.0), (100.0, 0.0)
    fitted = detected + np.array([3.0, 4.0])  # 5 px everywhere
    errors = landmark_errors({"a": fitted, "b": fitted}, {"a": detected})
    assert list(errors) == ["a"]
    np.testing.assert_allclose(errors["a"], 0.05)


def test_import_costs() -> None:
    log = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       100 |        100 |     torch._C",
        "import time:      2000 |       2100 |   torch",
        "import time:       500 |       2600 | core.model",
        "import time:       300 |        300 | torch._dynamo",
    ])
    top, packages = import_costs(log)
    assert top == pytest.approx({"core.model": 0.0026, "torch._dynamo": 0.0003})
    assert packages["torch"] == pytest.approx((0.0024, 3))
    assert packages["core"] == pytest.approx((0.0005, 1))


def test_a_run_counts_the_cpu_of_its_children(tmp_path) -> None:
    """The CPU time bench_eos gives a run includes what the process's own children spent (ours forks
    a landmark child): a process that waits for a child busy ~0.3 s adds about that much."""
    import sys

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    code = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {burn!r}], check=True)\n"
    before = children_cpu()
    timed = run_timed([sys.executable, "-c", code], tmp_path / "log.txt")
    assert timed.cpu == pytest.approx(children_cpu() - before)
    assert 0.3 <= timed.cpu <= 0.3 + 0.5 and timed.cpu <= 2 * timed.wall + 0.1


def test_profiled_script_that_exits_now_leaves_its_statistics(tmp_path) -> None:
    """--profile's cProfile run: a script ending as the demo does (`utils.process.exit_now`: exit
    handlers, then no teardown) still leaves its statistics, with its own functions, arguments and
    ``__main__`` block as a plain run has them."""
    import pstats
    import sys

    script = tmp_path / "job.py"
    script.write_text("import sys\n"
                      "def busy(n):\n    return sum(i * i for i in range(n))\n"
                      "if __name__ == '__main__':\n"
                      "    from utils.process import exit_now\n"
                      "    busy(int(sys.argv[1]))\n"
                      "    exit_now(0)\n")
    stats = tmp_path / "job.prof"
    run_timed(_profiled([sys.executable, str(script), "20000"], stats, tmp_path), tmp_path / "log.txt")
    calls = {name: counts[1] for (filename, _, name), counts in pstats.Stats(str(stats)).stats.items()  # type: ignore[attr-defined]
             if filename == str(script)}
    assert calls["busy"] == 1 and calls["<genexpr>"] == 20001


def test_jobs_run_with_the_bytecode_cache_a_user_has(monkeypatch) -> None:
    """The measured jobs' environment drops this machine's PYTHONDONTWRITEBYTECODE (a user's Python
    caches the project's bytecode) and keeps the rest, with what a run adds."""
    from benchmarks.bench_eos import job_environment

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("INORIG_TEST_MARK", "kept")
    env = job_environment(XDG_CACHE_HOME="/tmp/empty")
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert env["INORIG_TEST_MARK"] == "kept" and env["XDG_CACHE_HOME"] == "/tmp/empty"
    assert env["PYTHONUNBUFFERED"] == "1" and env["TQDM_DISABLE"] == "1"
