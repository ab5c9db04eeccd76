"""The frames the README's retargeting picture shows (`utils.showcase.showcase_frames`)."""
from types import SimpleNamespace

import numpy as np

from utils.showcase import showcase_frames


def _tracking(n=60):
    names = ["eyeBlink_L", "eyeBlink_R", "jawOpen", "mouthSmile_L", "mouthSmile_R"]
    expression = np.zeros((n, len(names)), np.float32)
    expression[20, :2] = 0.9          # a blink at 20
    expression[24, 2] = 0.7           # a jaw open too near it at 24, a weaker one at 40
    expression[40, 2] = 0.5
    gaze = np.zeros((n, 2), np.float32)
    gaze[50, 0] = np.radians(15.0)    # a look aside at 50
    detected = np.ones(n, bool)
    detected[45] = False
    expression[45, 3:] = 1.0          # a smile on a frame without a face: not shown
    return SimpleNamespace(expression_names=names, expression=expression, gaze_left=gaze, detected=detected)


def test_frames_show_the_strongest_actions_apart():
    chosen = showcase_frames(_tracking(), count=4, apart=8)
    assert chosen[20] == "blink" and chosen[40] == "jaw open" and chosen[50] == "gaze"
    assert 45 not in chosen and 24 not in chosen and len(chosen) == 4
    assert list(chosen) == sorted(chosen)
    filler = [i for i, label in chosen.items() if label == "tracked"]
    assert len(filler) == 1 and all(abs(filler[0] - j) >= 8 for j in (20, 40, 50))


def test_without_gaze_or_actions_the_frames_are_spread():
    quiet = _tracking()
    quiet.expression[:] = 0.0
    quiet.gaze_left = None
    chosen = showcase_frames(quiet, count=3)
    assert set(chosen.values()) == {"tracked"} and len(chosen) == 3 and max(chosen) == 59
