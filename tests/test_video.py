"""Video: streaming reads, truncated/corrupt files, face tracking, filtered landmark tracks."""

from pathlib import Path

import cv2
import imageio.v2 as iio
import numpy as np
import pytest

from utils.io.images import read_image
from utils.io.video import VideoReader, VideoReadError
from utils.landmarks.detect import FaceLandmarker
from utils.landmarks.filters import mean_deviation, mean_motion
from utils.landmarks.tracking import FaceTracker, track_video
from benchmarks.bench_encoder import psnr
from tests.conftest import x264_options

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RIG_PHOTO = SHARED / "data" / "real" / "rig_case1" / "sample0_view1.jpg"
VIDEO = SHARED / "data" / "real" / "videos" / "d0.mp4"


def _write(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    """H.264 mp4 with its index up front and a keyframe every 5 frames, so that the first half
    of the file holds several decodable frames."""
    with iio.get_writer(path, fps=fps, macro_block_size=1,
                        output_params=["-movflags", "+faststart", "-g", "5"]) as writer:
        for frame in frames:
            writer.append_data(frame)
    return path


def _cut_in_half(path: Path) -> Path:
    cut = path.with_name("cut_" + path.name)
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return cut


def _read_until_error(path: Path) -> tuple[list[np.ndarray], VideoReadError]:
    frames = []
    with pytest.raises(VideoReadError) as info:
        with VideoReader(path) as video:
            for frame in video:
                frames.append(frame)
    return frames, info.value


@pytest.fixture(scope="module")
def landmarker() -> FaceLandmarker:
    return FaceLandmarker("dlib")


@pytest.fixture(scope="module")
def moving_face() -> tuple[list[np.ndarray], np.ndarray]:
    """40 frames of a rig photo sliding over a 320x320 canvas, and each frame's offset."""
    if not RIG_PHOTO.is_file():
        pytest.skip(f"shared data not found: {RIG_PHOTO}")
    photo = read_image(RIG_PHOTO)
    t = np.arange(40)
    offsets = np.stack([32 + 28 * np.sin(t / 4), 32 + 20 * np.cos(t / 5)], -1)
    frames = []
    for dx, dy in offsets:
        M = np.float32([[1, 0, dx], [0, 1, dy]])
        frames.append(cv2.warpAffine(photo, M, (320, 320), borderMode=cv2.BORDER_REPLICATE))
    return frames, offsets


def test_reader_streams_every_frame_with_info(tmp_path):
    frames = []
    for i in range(20):
        frame = np.full((48, 64, 3), 10 * i, np.uint8)
        frame[:16, :16] = (255, 0, 0)
        frames.append(frame)
    path = _write(tmp_path / "ramp.mp4", frames, fps=25)
    with VideoReader(path) as video:
        assert (video.info.fps, video.info.width, video.info.height) == (25.0, 64, 48)
        assert video.info.frame_count == 20
        read = list(video)
    assert len(read) == 20
    for i, frame in enumerate(read):
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        assert abs(float(frame[30:, 30:].mean()) - 10 * i) < 4
        np.testing.assert_allclose(frame[8, 8], (255, 0, 0), atol=30)  # RGB, not BGR


def test_video_cut_in_the_middle_yields_readable_frames_then_error(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(30)]
    path = _write(tmp_path / "noise.mp4", frames)
    read, error = _read_until_error(_cut_in_half(path))
    assert 3 <= len(read) < 30
    message = str(error)
    assert "cut_noise.mp4" in message and "truncated" in message
    assert f"after {len(read)} of 30 frames" in message


def test_unreadable_video_errors(tmp_path):
    with pytest.raises(VideoReadError, match="missing.mp4: no such video file"):
        VideoReader(tmp_path / "missing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(VideoReadError, match="garbage.mp4: cannot open video"):
        VideoReader(garbage)
    # an mp4 whose index (moov) comes last: cut in half, nothing can be decoded
    writer = cv2.VideoWriter(str(tmp_path / "late.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25,
                             (32, 32))
    for i in range(10):
        writer.write(np.full((32, 32, 3), i * 20, np.uint8))
    writer.release()
    with pytest.raises(VideoReadError, match="cut_late.mp4: cannot open video"):
        VideoReader(_cut_in_half(tmp_path / "late.mp4"))


def test_tracker_detects_once_and_follows_the_face(landmarker, moving_face):
    frames, offsets = moving_face
    tracker = FaceTracker(landmarker)
    results = [tracker.update(frame) for frame in frames]
    assert all(r.face is not None for r in results)
    assert [r.detected for r in results].count(True) == 1 and results[0].detected
    track = np.stack([r.face.landmarks for r in results])
    moved = (track - track[0]).mean(axis=1)
    error = np.linalg.norm(moved - (offsets - offsets[0]), axis=-1)
    assert error.mean() < 1.5 and error.max() < 4.0


def test_tracker_flags_faceless_frames_and_recovers(landmarker, moving_face):
    frames, _ = moving_face
    frames = frames[:10] + [np.zeros_like(frames[0])] * 3 + frames[10:20]
    tracker = FaceTracker(landmarker)
    results = [tracker.update(frame) for frame in frames]
    assert [r.face is None for r in results] == [False] * 10 + [True] * 3 + [False] * 10
    assert all(r.detected for r in results[10:14])  # lost: detection until found again
    assert not any(r.detected for r in results[14:])


def test_track_video_then_truncated_copy(landmarker, moving_face, tmp_path):
    frames, _ = moving_face
    path = _write(tmp_path / "face.mp4", frames)
    with VideoReader(path) as video:
        assert (video.info.fps, video.info.width, video.info.height) == (25.0, 320, 320)
        out = list(track_video(video, landmarker))
    assert len(out) == 40 and all(f.has_face and f.landmarks.shape == (68, 2) for f in out)
    assert out[0].detected and out[5].time_s == pytest.approx(5 / 25)
    cut = _cut_in_half(path)
    got = []
    with pytest.raises(VideoReadError, match="cut_face.mp4: video ended after"):
        for frame in track_video(cut, landmarker):
            got.append(frame)
    assert 1 <= len(got) < 40 and all(f.has_face for f in got)
    np.testing.assert_allclose(got[0].face.landmarks, out[0].face.landmarks, atol=3.0)


def test_real_video_every_frame_and_filter_figures(landmarker):
    """On a real clip (first 100 frames): landmarks on every frame; the One Euro filter lowers
    frame-to-frame motion and stays within 2 px (mean) of the per-frame landmarks."""
    if not VIDEO.is_file():
        pytest.skip(f"shared data not found: {VIDEO}")
    out = list(track_video(VIDEO, landmarker, max_frames=100, keep_images=False))
    assert len(out) > 50 and all(f.has_face for f in out)
    raw = np.stack([f.face.landmarks for f in out])
    filtered = np.stack([f.landmarks for f in out])
    assert mean_motion(filtered) < 0.8 * mean_motion(raw)
    assert mean_deviation(filtered, raw) < 2.0


def _two_people() -> tuple[list[np.ndarray], np.ndarray]:
    """Frames of the example driver (left) beside a still of another person (right), 480x240."""
    from utils.paths import EXAMPLES_DIR

    with VideoReader(EXAMPLES_DIR / "driver.mp4") as video:
        moving = [cv2.resize(f, (240, 240), interpolation=cv2.INTER_AREA) for _, f in zip(range(24), video)]
    still = cv2.resize(read_image(sorted((EXAMPLES_DIR / "photos").glob("*.jpg"))[0]), (240, 240),
                       interpolation=cv2.INTER_AREA)
    return moving, still


def test_tracker_follows_the_chosen_person_through_a_loss_and_a_cut(landmarker):
    """--face applies to video: face 1 (the right one) is chosen, followed, not swapped for the other
    person while it is hidden, found again where it was; after a cut the rule chooses afresh."""
    moving, still = _two_people()
    grey = np.full_like(still, 128)
    frames = [np.concatenate([still, m], axis=1) for m in moving[:10]]          # 0-9: followed on the right
    frames += [np.concatenate([still, grey], axis=1)] * 3                         # 10-12: the right face hidden
    frames += [np.concatenate([still, m], axis=1) for m in moving[10:16]]       # 13-18: back on the right
    frames += [np.concatenate([m, still], axis=1) // 2 for m in moving[16:24]]  # 19-26: a new shot, swapped
    tracker = FaceTracker(landmarker, face=1)
    results = [tracker.update(np.ascontiguousarray(f)) for f in frames]
    x = [None if r.face is None else float(r.face.landmarks[:, 0].mean()) for r in results]
    assert all(v is not None and v > 240 for v in x[:10]), x[:10]
    assert x[10:13] == [None, None, None]  # the left person is not taken instead
    assert all(v is not None and v > 240 for v in x[13:19]), x[13:19]
    assert [i for i, r in enumerate(results) if r.cut] == [19]
    assert all(v is not None and v > 240 for v in x[19:]), x[19:]  # face 1 again: now the still person
    largest = FaceTracker(landmarker, face=0)
    assert float(largest.update(np.ascontiguousarray(frames[0])).face.landmarks[:, 0].mean()) < 240


def test_writer_presets_reach_x264_and_keep_the_frames(tmp_path):
    """The writer's x264 preset is the one x264 encodes with (superfast: diamond motion search, subme
    1; veryfast, the default: hexagon, subme 2), and either gives back the frames written (PSNR above
    35 dB on a smooth moving gradient); an unknown preset is refused before anything is written."""
    from utils.io.video_writer import VideoWriter, h264_available

    if not h264_available():
        pytest.skip("imageio-ffmpeg's ffmpeg binary is not installed")
    yy, xx = np.mgrid[0:96, 0:128]
    frames = [np.stack([(xx + 3 * k) % 256, (yy * 2) % 256, np.full_like(xx, 40 + 10 * k)], -1).astype(np.uint8)
              for k in range(8)]
    settings = {}
    for preset in ("superfast", None):
        path = tmp_path / f"{preset}.mp4"
        with (VideoWriter(path, 25) if preset is None else VideoWriter(path, 25, preset=preset)) as writer:
            for frame in frames:
                writer.write(frame)
        settings[preset] = x264_options(path)
        with VideoReader(path) as reader:
            back = list(reader)
        assert len(back) == len(frames)
        assert psnr(frames, back) > 35
    assert (settings["superfast"]["me"], settings["superfast"]["subme"]) == ("dia", "1")
    assert (settings[None]["me"], settings[None]["subme"]) == ("hex", "2")
    with pytest.raises(ValueError, match="preset"):
        VideoWriter(tmp_path / "never.mp4", 25, preset="quickest")
    assert not (tmp_path / "never.mp4").exists()
