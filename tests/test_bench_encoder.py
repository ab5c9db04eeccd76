"""The encoder benchmark's measures: PSNR's known answer, and a run over a small clip."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_encoder import main, psnr


def test_psnr_known_answer() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr([a], [a + 1]) == pytest.approx(10 * np.log10(255.0 ** 2))  # MSE 1: 48.13 dB
    assert psnr([a, a], [a + 2, a]) == pytest.approx(10 * np.log10(255.0 ** 2 / 2.0))  # mean MSE 2


def test_runs_each_preset_on_a_clip(tmp_path, capsys) -> None:
    from utils.io.video_writer import VideoWriter, h264_available

    if not h264_available():
        pytest.skip("imageio-ffmpeg's ffmpeg binary is not installed")
    yy, xx = np.mgrid[0:64, 0:96]
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, 25) as writer:
        for k in range(6):
            writer.write(np.stack([(xx + 4 * k) % 256, yy * 3, np.full_like(xx, 90)], -1).astype(np.uint8))
    main([str(clip), "--frames", "5", "--presets", "superfast", "ultrafast"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| superfast")
            or line.startswith("| ultrafast")]
    assert len(rows) == 2
    for row in rows:
        cpu, size, quality = (float(cell) for cell in row.strip("|").split("|")[1:])
        assert cpu >= 0 and 0 <= size < 1 and quality > 30  # a few kB: 0.00 MB as printed
