"""Per-landmark detector noise: the robust spread, the weights, the file, the shipped dlib profile."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from utils.landmarks.noise import (PHOTO_POWER, REFERENCE_PX, LandmarkNoiseError, detector_weights,
                                   landmark_spread, load_landmark_noise, noise_path, relative_confidence,
                                   save_landmark_noise)


def _residuals(sigma: torch.Tensor, n: int, outliers: float = 0.0, seed: int = 0):
    """Residuals whose relative errors have per-point std ``sigma``, with a fraction of wild ones."""
    gen = torch.Generator().manual_seed(seed)
    eye = 80.0 + 60.0 * torch.rand(n, generator=gen)
    rel = torch.randn(n, 68, 2, generator=gen) * sigma[None, :, None]
    wild = torch.rand(n, 68, generator=gen) < outliers
    rel = torch.where(wild[..., None], rel * 20.0, rel)
    return rel * eye[:, None, None], eye


def test_spread_recovers_the_per_point_noise_and_ignores_wild_detections():
    sigma = torch.linspace(0.01, 0.1, 68)
    residuals, eye = _residuals(sigma, 3000)
    assert torch.allclose(landmark_spread(residuals, eye), sigma, rtol=0.08)
    residuals, eye = _residuals(sigma, 3000, outliers=0.1, seed=1)
    spread = landmark_spread(residuals, eye)
    assert torch.allclose(spread, sigma, rtol=0.2)
    plain_std = (residuals / eye[:, None, None]).std(0).pow(2).mean(-1).sqrt()
    assert bool((plain_std > 2.5 * sigma).all())  # what a non-robust estimate would have said


def test_spread_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="N, 68, 2"):
        landmark_spread(torch.zeros(5, 67, 2), torch.ones(5))
    with pytest.raises(ValueError, match="N >= 2"):
        landmark_spread(torch.zeros(1, 68, 2), torch.ones(1))


def test_relative_confidence_is_capped_inverse_variance():
    sigma = torch.full((68,), 0.02)
    sigma[:17] = 0.08
    sigma[40] = 0.01
    sigma[50] = 0.04
    w = relative_confidence(sigma)
    assert torch.allclose(w[:17], torch.full((17,), 0.0625))
    assert float(w[40]) == 1.0 and float(w[30]) == 1.0
    assert float(w[50]) == pytest.approx(0.25)
    assert float(relative_confidence(sigma, reference=0.04)[0]) == pytest.approx(0.25)
    assert float(relative_confidence(sigma, power=0.5)[0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="68 positive"):
        relative_confidence(torch.zeros(68))


def test_file_round_trip_and_clear_errors(tmp_path):
    sigma = torch.linspace(0.01, 0.1, 68)
    path = save_landmark_noise(tmp_path / "noise.npz", sigma, "dlib")
    assert torch.allclose(load_landmark_noise(path), sigma)
    with pytest.raises(LandmarkNoiseError, match="missing.npz.*not found"):
        load_landmark_noise(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(LandmarkNoiseError, match="garbage.npz.*not a readable"):
        load_landmark_noise(garbage)
    np.savez(tmp_path / "short.npz", sigma=np.ones(60, np.float32), detector=np.array("dlib"))
    with pytest.raises(LandmarkNoiseError, match="short.npz.*68 positive"):
        load_landmark_noise(tmp_path / "short.npz")
    np.savez(tmp_path / "nosigma.npz", detector=np.array("dlib"))
    with pytest.raises(LandmarkNoiseError, match="nosigma.npz.*lacks 'sigma'"):
        load_landmark_noise(tmp_path / "nosigma.npz")


def test_shipped_dlib_profile():
    sigma = load_landmark_noise(noise_path("dlib"))
    jaw, inner = float(sigma[:17].median()), float(sigma[17:].median())
    assert 0.01 < inner < 0.05 and jaw > 2.0 * inner  # dlib guesses the jawline, sees the eyes
    # Two faces in 256 px crops: eye distances 120 px and 30 px (a far smaller face in its crop).
    landmarks = torch.zeros(2, 68, 2)
    landmarks[0, 45, 0], landmarks[1, 45, 0] = 120.0, 30.0
    contrast = relative_confidence(sigma, power=2.0)
    assert float(contrast.max()) == 1.0 and float(contrast[:17].max()) < 0.35
    weights = detector_weights("dlib", landmarks)
    overall = (REFERENCE_PX / (inner * 120.0)) ** 2  # dlib's ~2.9 px vs the builder's 1.5 px
    assert 0.15 < overall < 0.4
    assert torch.allclose(weights[0], overall * contrast.sqrt() ** PHOTO_POWER, rtol=1e-5)
    assert torch.allclose(weights[1], contrast.sqrt() ** PHOTO_POWER)  # 0.7 px noise: capped at 1
    assert detector_weights("no_such_detector", landmarks) is None
    with pytest.raises(ValueError, match="G, 68, 2"):
        detector_weights("dlib", torch.zeros(68, 2))
    log = json.loads(noise_path("dlib").with_name("landmark_noise_dlib_log.json").read_text())
    assert log["command"].startswith("python calibrate_landmarks.py") and log["seed"] == 500
    assert np.allclose(log["fit"]["spread"], sigma.numpy(), atol=1e-4)


def test_calibration_script_measures_a_profile(ict_dir, tmp_path):
    pytest.importorskip("dlib")
    from calibrate_landmarks import main

    out = tmp_path / "noise.npz"
    assert main(["--subjects", "2", "--holdout", "1", "--images", "3", "--seed", "7", "--out", str(out),
                 "--model-path", str(ict_dir)]) == 0
    sigma = load_landmark_noise(out)
    log = json.loads((tmp_path / "noise_log.json").read_text())
    assert log["fit_seeds"] == [7, 8] and log["holdout_seeds"] == [9, 9]
    assert log["used"] + log["no_face"] + log["rejected"] == 6
    assert np.allclose(log["fit"]["spread"], sigma.numpy(), atol=1e-4)
    assert float(sigma[17:].median()) < 0.1  # the detector found these faces, not noise
