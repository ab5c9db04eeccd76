"""Two versions of the code side by side: the same whole job, run alternately, A B B A ... (issue 20).

    .venv/bin/python -m benchmarks.bench_ab --base ../other-checkout [--rounds 10] [--pause 1.0]
        [--folder ../shared/data/real/rig_case1] [--base-python PY]

This machine's speed drifts by 10-30 % within an hour, more than most changes a speed session
makes, so one version measured after the other says little. Here each round runs both versions,
the first round A then B, the next B then A (the order effect cancels over pairs of rounds), with
a pause after every run so that the ~75 MB a rig run writes is written back before the next run
starts. A is ``--base`` (another checkout, e.g. ``git worktree add ../base <commit>``, with its
compiled modules built and a face model at its ``external/``), B this checkout; both run
``demo.py --no-video`` on the same photos, as `benchmarks.bench_eos`'s our side does, in
`benchmarks.bench_eos.job_environment` (bytecode cached as Python does by default).

Prints per version the median and mean wall time, the median CPU time (user + system, children
included) and every run, then in how many rounds B was the quicker.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from benchmarks.bench_eos import ROOT, Timed, our_command, run_timed

DEFAULT_FOLDER = ROOT.parent / "shared" / "data" / "real" / "rig_case1"


def round_order(round_index: int) -> Tuple[str, str]:
    """Which version runs first in a round: A in even rounds, B in odd ones."""
    return ("A", "B") if round_index % 2 == 0 else ("B", "A")


def summary(runs: Dict[str, List[Timed]]) -> str:
    """The table of both versions' runs (in round order) and the rounds B won."""
    lines = ["| version | wall (s): median | mean | CPU (s): median | runs (s) |", "|---|---|---|---|---|"]
    for name in ("A", "B"):
        walls = [r.wall for r in runs[name]]
        lines.append(f"| {name} | **{statistics.median(walls):.3f}** | {statistics.mean(walls):.3f} | "
                     f"{statistics.median(r.cpu for r in runs[name]):.2f} | "
                     f"{', '.join(f'{w:.2f}' for w in walls)} |")
    pairs = list(zip(runs["A"], runs["B"]))
    quicker = sum(b.wall < a.wall for a, b in pairs)
    lines.append("")
    lines.append(f"B quicker in {quicker} of {len(pairs)} rounds")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (version A)")
    parser.add_argument("--base-python", default=sys.executable, help="its interpreter (default: this one)")
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="the photos")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds after each run")
    args = parser.parse_args(argv)
    trees = {"A": (args.base.resolve(), args.base_python), "B": (ROOT, sys.executable)}
    for name, (tree, _) in trees.items():
        if not (tree / "demo.py").is_file():
            parser.error(f"version {name}: {tree} has no demo.py")
    if not args.folder.is_dir():
        parser.error(f"--folder {args.folder} is not a folder")
    runs: Dict[str, List[Timed]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="bench_ab_") as work:
        for k in range(args.rounds):
            for name in round_order(k):
                tree, python = trees[name]
                out = Path(work) / name
                shutil.rmtree(out, ignore_errors=True)  # each run writes afresh, as a user's first run
                runs[name].append(run_timed(our_command(args.folder, out, python, tree),
                                            Path(work) / f"{name}.log", cwd=tree))
                time.sleep(args.pause)
            print(f"round {k + 1}: A {runs['A'][-1].wall:.2f} s, B {runs['B'][-1].wall:.2f} s", flush=True)
    print(f"\n### A: {trees['A'][0]}; B: {trees['B'][0]}; {args.folder.name}, {args.rounds} rounds\n")
    print(summary(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
