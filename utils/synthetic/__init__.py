"""Synthetic faces with ground truth: random subjects and clips rendered from the face model, on
disk and in memory, for tests, benchmarks, calibration and training."""
