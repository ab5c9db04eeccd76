"""The photos' landmarks detected in a forked child (utils.landmarks.prefetch) equal the in-process
`detect_folder`: on real photos, and on a folder with a faceless and a corrupt image (the same
skipped reasons and log lines); a child that dies gives the same result, detected in-process, and
a warning; the demo starts the child before torch is imported and reaps it on an input error.

A fork is only safe before torch is imported, and pytest has imported it: the prefetching side runs
in a fresh interpreter (`prefetched`), the in-process side here.
"""
from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, shared_path

from utils.landmarks.detect import FaceLandmarker, FolderFaces, detect_folder
from utils.landmarks.prefetch import FolderPrefetch

#: Runs in a fresh interpreter: a prefetch of argv[1] (face rule argv[2]), torch imported meanwhile as
#: the demo does; argv[3]: "" or how the child dies ("before": before its landmarker is made,
#: "after": once it is). Writes {found, dlib loaded here, a child left unreaped} to argv[4].
PREFETCH_SCRIPT = """
import logging, os, pickle, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from utils.landmarks import prefetch as module
folder, select, die, out = sys.argv[1:]
select = int(select) if select.isdigit() else select

def ready_then_die(folder, backend, select, stream):
    module._send(stream, ("ready", None))
    os._exit(3)

def die_at_once(folder, backend, select, stream):
    raise RuntimeError("the child's detection broke")

if die:
    module._child_detection = {"before": die_at_once, "after": ready_then_die}[die]
job = module.FolderPrefetch.start(folder, "dlib", select)
assert job is not None, "no prefetch started"
import torch
with job:
    job.ready()  # as the demo asks, when it makes its landmarker
    found = job.faces(folder, module.DeferredLandmarker("dlib"), select)
try:
    os.waitpid(-1, os.WNOHANG)
    unreaped = True
except ChildProcessError:
    unreaped = False
with open(out, "wb") as f:
    pickle.dump({"found": found, "dlib_here": "dlib" in sys.modules, "unreaped": unreaped}, f)
"""


def prefetched(folder: Path, tmp_path: Path, select: str = "largest", die: str = "") -> tuple[dict, str]:
    """What the prefetch gives in a fresh interpreter, and its stderr (the log lines)."""
    out = tmp_path / "prefetched.pkl"
    done = subprocess.run([sys.executable, "-c", PREFETCH_SCRIPT, str(folder), select, die, str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out, "rb") as f:
        return pickle.load(f), done.stderr


def assert_same(got: FolderFaces, want: FolderFaces) -> None:
    """Every field of two `FolderFaces` equal, arrays exactly."""
    assert [p for p, _, _ in got.faces] == [p for p, _, _ in want.faces]
    for (_, image, face), (_, image_want, face_want) in zip(got.faces, want.faces):
        np.testing.assert_array_equal(image, image_want)
        np.testing.assert_array_equal(face.landmarks, face_want.landmarks)
        assert face.bbox == face_want.bbox and face.confidence == face_want.confidence
    assert got.skipped == want.skipped and got.choices == want.choices and got.sizes == want.sizes
    assert got.all_faces.keys() == want.all_faces.keys()
    for path, faces in got.all_faces.items():
        assert [f.bbox for f in faces] == [f.bbox for f in want.all_faces[path]]
        for f, g in zip(faces, want.all_faces[path]):
            np.testing.assert_array_equal(f.landmarks, g.landmarks)


@pytest.fixture(scope="module")
def landmarker() -> FaceLandmarker:
    return FaceLandmarker("dlib")


@pytest.fixture()
def mixed_folder(tmp_path) -> Path:
    """Two real photos, one without a face, one that does not decode."""
    photos = sorted(shared_path("real", "rig_case1").glob("*.jpg"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in photos[:2]:
        shutil.copy(photo, folder / photo.name)
    from PIL import Image

    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(folder / "blank.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def test_prefetch_equals_in_process_detection_on_real_photos(landmarker, tmp_path):
    folder = shared_path("real", "rig_case1")
    got, log = prefetched(folder, tmp_path)
    want = detect_folder(folder, landmarker, progress=False)
    assert len(want.faces) == 14
    assert_same(got["found"], want)
    assert not got["dlib_here"] and not got["unreaped"]  # the parent never loaded dlib's predictor
    assert "WARNING" not in log and "ERROR" not in log, log


def test_prefetch_skips_what_detect_folder_skips_and_logs_it(landmarker, mixed_folder, tmp_path, caplog):
    got, log = prefetched(mixed_folder, tmp_path, select="0")
    with caplog.at_level("INFO"):
        want = detect_folder(mixed_folder, landmarker, select=0, progress=False)
    assert_same(got["found"], want)
    assert want.skipped[mixed_folder / "blank.png"] == "no face found"
    assert "broken.jpg: cannot decode" in want.skipped[mixed_folder / "broken.jpg"]
    assert [f.chosen for f in want.choices.values()] == [0, 0]
    logged = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert logged == [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records
                      if r.levelname in ("WARNING", "ERROR")]
    assert len(logged) == 2  # the faceless photo, the corrupt file: once each, replayed by the parent


@pytest.mark.parametrize("die", ["before", "after"])
def test_a_dead_child_gives_the_same_result_and_a_warning(landmarker, mixed_folder, tmp_path, die):
    got, log = prefetched(mixed_folder, tmp_path, die=die)
    assert_same(got["found"], detect_folder(mixed_folder, landmarker, progress=False))
    assert got["dlib_here"] and not got["unreaped"]  # detected in the parent, the child reaped
    warnings = [line for line in log.splitlines() if "prefetch" in line]
    assert warnings == ["WARNING utils.landmarks.prefetch: photo landmarks prefetch: the child process "
                        "ended without a result (EOFError); detecting in this process"]


def test_nothing_is_prefetched_where_a_fork_is_unsafe_or_useless(tmp_path):
    import torch  # noqa: F401  (a process that holds torch's threads must not fork)

    assert FolderPrefetch.start(tmp_path, "dlib") is None
    code = ("import sys, demo\n"
            "for argv in (['--no-video', '--rig-dir', sys.argv[1]], ['--no-video', '--rig-dir', sys.argv[1], "
            "'--landmarks', 'mediapipe'], ['--target-rig', 'r.npz', '--video', 'v.mp4'], ['--synthetic'], "
            "['--no-video', '--rig-dir', sys.argv[1] + '/absent']):\n"
            "    with demo.photo_prefetch(demo.parse_args(argv)) as job:\n"
            "        print(type(job).__name__, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.split("\n")[:5] == ["FolderPrefetch False", "NoneType False", "NoneType False",
                                           "NoneType False", "NoneType False"]


def test_demo_reaps_its_child_on_an_input_error(tmp_path):
    folder = shared_path("real", "rig_case1")
    code = ("import os, sys, demo\n"
            "code = demo.main(['--no-video', '--quiet', '--rig-dir', sys.argv[1], '--weights', sys.argv[2], "
            "'--out', sys.argv[3]])\n"
            "try:\n    os.waitpid(-1, os.WNOHANG)\n    left = True\n"
            "except ChildProcessError:\n    left = False\n"
            "print(code, left)\n")
    done = subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path / "absent.pth"),
                           str(tmp_path / "out")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["1", "False"], done.stderr
    assert done.stderr.strip() == f"ERROR demo: --weights {tmp_path / 'absent.pth'}: no such file"
    assert not (tmp_path / "out").exists()


# ---- a video's scan ---------------------------------------------------------------------------------

#: Runs in a fresh interpreter: a video scan prefetched (argv[1] video, argv[2] backend, argv[3] source
#: frames "8" or "3,40,90", argv[4] "" or how the child dies, argv[5] what the parent asks differently:
#: "" or "face"), torch imported meanwhile as the demo does; the parent's `scan_video` of it written to
#: argv[6] as plain arrays, with whether torch was in the child and the scratch folder's fate.
VIDEO_SCRIPT = """
import gc, os, pickle, sys
from pathlib import Path
from utils.landmarks import prefetch as module
video, backend, frames, die, differ, out = sys.argv[1:]
frames = int(frames) if frames.isdigit() else [int(f) for f in frames.split(",")]
original = module._child_scan

def scan_and_report(*args):
    scan = module.scan_landmarks

    def scan_noting_the_collector(*a, **k):  # torch's absence and the collector's state, as it scans
        with open(out + ".child", "w") as f:
            f.write(f"{'torch' in sys.modules} {gc.isenabled()}")
        return scan(*a, **k)

    module.scan_landmarks = scan_noting_the_collector
    sent = module._send

    def send_and_count(stream, message):  # every message's kind, in order
        with open(out + ".kinds", "a") as f:
            f.write(message[0] + "\\n")
        sent(stream, message)

    module._send = send_and_count
    module._ProgressSender.__init__.__defaults__ = (0.0,)  # a progress message after every frame
    original(*args)

def ready_then_die(*args):
    module._send(args[3], ("ready", None))
    os._exit(3)

module._child_scan = ready_then_die if die else scan_and_report
gc.disable()  # as the demo forks: while it imports (`utils.process.collection_after_imports`)
job = module.VideoPrefetch.start(video, backend, frames)
assert job is not None, "no prefetch started"
scratch = job.scratch
import torch
from utils.landmarks.detect import FaceLandmarker
from utils.pipelines.video import scan_video
with job:
    assert job.ready()
    face = 0 if differ == "face" else "largest"
    scan = scan_video(video, module.DeferredLandmarker(backend), source_frames=frames, face=face,
                      prefetched=job)
landmarks = [scan.landmarks[i] for i in range(scan.frames)]
dense = None if scan.dense is None else [scan.dense[i] for i in range(scan.frames)]
candidates = [(y, i, c.image, c.image_to_crop, c.landmarks_crop) for y, i, c in scan.candidates]
kept = scan.scratch is not None and scan.scratch.is_dir()
scan.close()
with open(out, "wb") as f:
    pickle.dump({"frames": scan.frames, "landmarks": landmarks, "dense": dense, "candidates": candidates,
                 "cuts": scan.cuts, "error": scan.error, "kept": kept, "scratch_left": scratch.exists(),
                 "child_torch": open(out + ".child").read() if os.path.exists(out + ".child") else None,
                 "kinds": open(out + ".kinds").read().split() if os.path.exists(out + ".kinds") else []}, f)
"""


def scanned_in_child(tmp_path: Path, video: Path, backend: str, frames: str = "8", die: str = "",
                     differ: str = "") -> tuple[dict, str]:
    out = tmp_path / "scan.pkl"
    done = subprocess.run([sys.executable, "-c", VIDEO_SCRIPT, str(video), backend, frames, die, differ,
                           str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out, "rb") as f:
        return pickle.load(f), done.stderr


def assert_same_scan(got: dict, want, chosen: list) -> None:
    """The child's scan (as `scanned_in_child` wrote it) equal to ``want`` scanned here, exactly; its
    candidates those of ``chosen``."""
    assert got["frames"] == want.frames and got["cuts"] == want.cuts and got["error"] == want.error
    for i, row in enumerate(got["landmarks"]):
        np.testing.assert_array_equal(row, want.landmarks[i]) if row is not None else None
        assert (row is None) == (want.landmarks[i] is None)
    if want.dense is None:
        assert got["dense"] is None
    else:
        for i, row in enumerate(got["dense"]):
            assert (row is None) == (want.dense[i] is None)
            if row is not None:
                np.testing.assert_array_equal(row, want.dense[i])
    assert [(y, i) for y, i, *_ in got["candidates"]] == [(y, i) for y, i, _ in chosen]
    for (_, _, image, to_crop, marks), (_, _, crop) in zip(got["candidates"], chosen):
        np.testing.assert_array_equal(image, crop.image)
        np.testing.assert_array_equal(to_crop, crop.image_to_crop)
        np.testing.assert_array_equal(marks, crop.landmarks_crop)


@pytest.mark.parametrize("backend, frames", [("mediapipe", "8"), ("dlib", "3,40,90")])
def test_video_prefetch_equals_the_scan_here(tmp_path, backend, frames):
    from utils.landmarks.scan import choose_frames
    from utils.pipelines.video import scan_video

    video = REPO_ROOT / "examples" / "driver.mp4"
    got, log = scanned_in_child(tmp_path, video, backend, frames)
    source = int(frames) if frames.isdigit() else [int(f) for f in frames.split(",")]
    with scan_video(video, FaceLandmarker(backend), source_frames=source) as want:
        assert want.frames == 150
        if frames.isdigit():  # the child sends the 8 chosen of 4 per rig frame
            assert len(want.candidates) == 38 and len(got["candidates"]) == 8
        assert_same_scan(got, want, choose_frames(want.candidates, source))
    assert got["child_torch"] == "False True"  # the child scanned without torch, collecting cycles
    # its progress, frame by frame, read by the parent before the scan itself
    assert got["kinds"] == ["ready"] + ["progress"] * 150 + ["scan"]
    assert got["kept"] and not got["scratch_left"]  # the scan's scratch files, removed with it
    assert "WARNING" not in log, log


def test_a_dead_or_mismatched_video_child_is_scanned_again_here(tmp_path):
    from utils.landmarks.scan import choose_frames
    from utils.pipelines.video import scan_video

    video = REPO_ROOT / "examples" / "driver.mp4"
    with scan_video(video, FaceLandmarker("dlib"), source_frames=[5, 60]) as want:
        chosen = choose_frames(want.candidates, [5, 60])
        got, log = scanned_in_child(tmp_path, video, "dlib", "5,60", die="after")
        assert_same_scan(got, want, chosen)
        assert not got["kept"] and not got["scratch_left"]  # scanned here: the child's folder removed
        assert log.splitlines() == ["video landmarks prefetch: the child process ended without a result "
                                    "(EOFError); detecting in this process"]
        got, log = scanned_in_child(tmp_path, video, "dlib", "5,60", differ="face")
    with scan_video(video, FaceLandmarker("dlib"), source_frames=[5, 60], face=0) as want:
        assert_same_scan(got, want, choose_frames(want.candidates, [5, 60]))
    assert "asked for" in log and not got["scratch_left"]


def test_an_unreadable_video_is_reported_by_the_parent(tmp_path):
    from utils.io.video import VideoReadError
    from utils.landmarks.prefetch import DeferredLandmarker, VideoPrefetch
    from utils.pipelines.video import scan_video

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    code = ("import sys\nfrom utils.landmarks.prefetch import VideoPrefetch\n"
            "job = VideoPrefetch.start(sys.argv[1], 'dlib')\nimport torch\n"
            "from utils.landmarks.prefetch import DeferredLandmarker\n"
            "from utils.pipelines.video import scan_video\n"
            "with job:\n    job.ready()\n"
            "    scan_video(sys.argv[1], DeferredLandmarker('dlib'), prefetched=job)\n")
    done = subprocess.run([sys.executable, "-c", code, str(broken)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert "VideoReadError" in done.stderr and str(broken) in done.stderr.splitlines()[-1]
    with pytest.raises(VideoReadError, match=str(broken)):
        scan_video(broken, FaceLandmarker("dlib"))
    assert VideoPrefetch.start(tmp_path / "absent.mp4", "dlib") is None  # no such file: nothing forked
    assert VideoPrefetch.start(broken, "face_alignment") is None  # needs torch
    assert DeferredLandmarker("dlib").backend == "dlib"


def test_the_childs_progress_is_sent_at_most_every_interval(monkeypatch):
    import io

    from utils.landmarks import prefetch as module

    clock = iter([0.0, 0.1, 0.2, 0.3, 0.6, 0.7, 0.95])
    monkeypatch.setattr(module.time, "monotonic", lambda: next(clock))
    stream = io.BytesIO()
    send = module._ProgressSender(stream, interval=0.25)  # made at 0.0
    for done in range(1, 7):  # at 0.1, 0.2, 0.3, 0.6, 0.7, 0.95
        send(done, 6)
    stream.seek(0)
    sent = []
    while stream.tell() < len(stream.getvalue()):
        sent.append(pickle.load(stream))
    assert sent == [("progress", 3, 6), ("progress", 4, 6), ("progress", 6, 6)]


def test_the_demo_prefetches_a_video_file_only(tmp_path):
    code = ("import sys, demo\n"
            "video = sys.argv[1]\n"
            "for argv in (['--target-rig', 'r.npz', '--video', video],\n"
            "             ['--rig-dir', sys.argv[2], '--video', video],\n"
            "             ['--target-rig', 'r.npz', '--video', video,\n"
            "              '--video-landmarks', 'face_alignment'],\n"
            "             ['--no-video', '--rig-dir', sys.argv[2]],\n"
            "             ['--target-rig', 'r.npz', '--video', sys.argv[2]]):\n"
            "    args = demo.parse_args(argv)\n"
            "    with demo.photo_prefetch(args) as photos, demo.video_prefetch(args) as job:\n"
            "        print(type(job).__name__, 'torch' in sys.modules)\n")
    video = REPO_ROOT / "examples" / "driver.mp4"
    done = subprocess.run([sys.executable, "-c", code, str(video), str(tmp_path)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split("\n")[:5] == ["VideoPrefetch False", "VideoPrefetch False", "NoneType False",
                                           "NoneType False", "NoneType False"]
