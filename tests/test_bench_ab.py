"""`benchmarks.bench_ab`: rounds alternate A B, B A; the summary counts the rounds B won; a run goes in
its version's tree, and one that fails raises with its log."""
from __future__ import annotations

import sys

import pytest

from benchmarks.bench_ab import round_order, summary
from benchmarks.bench_eos import Timed, our_command, run_timed


def test_rounds_alternate_so_that_each_version_goes_first_as_often():
    orders = [round_order(k) for k in range(4)]
    assert orders == [("A", "B"), ("B", "A"), ("A", "B"), ("B", "A")]
    assert sum(o[0] == "A" for o in orders) == sum(o[0] == "B" for o in orders)


def test_summary_reports_medians_means_and_the_rounds_b_won():
    runs = {"A": [Timed(4.0, 6.0), Timed(4.4, 6.4), Timed(3.9, 6.1)],
            "B": [Timed(3.8, 5.0), Timed(4.5, 5.5), Timed(3.7, 5.2)]}
    text = summary(runs)
    assert "| A | **4.000** | 4.100 | 6.10 | 4.00, 4.40, 3.90 |" in text
    assert "| B | **3.800** | 4.000 | 5.20 | 3.80, 4.50, 3.70 |" in text
    assert text.endswith("B quicker in 2 of 3 rounds")


def test_a_run_times_its_job_in_its_tree_and_a_failing_one_raises_with_its_log(tmp_path):
    probe = "import os, sys; sum(range(10 ** 6)); sys.exit(0 if os.getcwd() == sys.argv[1] else 4)"
    timed = run_timed([sys.executable, "-c", probe, str(tmp_path)], tmp_path / "ok.log", cwd=tmp_path)
    assert timed.wall > 0 and timed.cpu > 0
    with pytest.raises(RuntimeError, match="(?s)exited with 3.*broken"):
        run_timed([sys.executable, "-c", "import sys; sys.stderr.write('broken'); sys.exit(3)"],
                  tmp_path / "bad.log", cwd=tmp_path)


def test_the_job_is_the_demos_rig_stage(tmp_path):
    command = our_command(tmp_path / "photos", tmp_path / "out", "py", tmp_path / "tree")
    assert command[:3] == ["py", str(tmp_path / "tree" / "demo.py"), "--no-video"]
    assert command[command.index("--rig-dir") + 1] == str(tmp_path / "photos")
