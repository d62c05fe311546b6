"""What a re-run costs before any work: planning a folder whose outputs all exist, sweeping the
output folder for stale partial files, and skipping every output, at 10k and 100k finished files.

    python benchmarks/rerun_cost.py [--sizes 10000 100000] [--rounds 3]

Each size gets an input folder of N (empty) .png files and an output folder holding N finished
outputs plus N/10 files of the user's that merely look like partials. Each round runs, in a fresh
child process per size (its peak memory is its own), the restore command's own steps: plan_jobs,
then prepare (the sweep and the skip). Sizes alternate their order from round to round. Printed:
median seconds and spread per size, peak memory (the child's VmHWM, which includes the
interpreter), and the ratio of the largest to the smallest: linear cost gives a ratio near the
ratio of the sizes (10 for 10k -> 100k); a glob of the output folder per output gave ~100.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
from hinet_deploy.restore.plan import plan_jobs
from hinet_deploy.restore.report import RestoreOptions, prepare


def peak_mb():  # VmHWM: this process's own peak (ru_maxrss would carry the forking parent's)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024

start = time.perf_counter()
plan = plan_jobs([sys.argv[1]], sys.argv[2])
planned = time.perf_counter()
report, todo = prepare(plan, RestoreOptions(quiet=True), lambda m: None)
done = time.perf_counter()
assert not todo and report.skipped == len(plan.jobs), (len(todo), report.skipped)
print(json.dumps({"plan_s": planned - start, "prepare_s": done - planned, "total_s": done - start,
                  "jobs": len(plan.jobs),
                  "peak_mb": peak_mb()}))
"""


def make_tree(root: Path, count: int) -> tuple[Path, Path]:
    inputs, outputs = root / "in", root / "out"
    inputs.mkdir(parents=True)
    outputs.mkdir()
    for i in range(count):
        name = f"frame{i:06d}.png"
        (inputs / name).touch()
        (outputs / name).touch()
        if i % 10 == 0:  # a user's look-alike of a partial name: must survive the sweep
            (outputs / f".{name}.{i}.notes").touch()
    return inputs, outputs


def measure(inputs: Path, outputs: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    run = subprocess.run([sys.executable, "-c", CHILD, str(inputs), str(outputs)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(run.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {n: make_tree(Path(tmp) / str(n), n) for n in args.sizes}
        runs: dict[int, list[dict]] = {n: [] for n in args.sizes}
        for r in range(args.rounds):
            order = args.sizes[r % len(args.sizes):] + args.sizes[:r % len(args.sizes)]
            for n in order:
                runs[n].append(measure(*trees[n]))
        for n, (_, outputs) in trees.items():
            left = sum(1 for p in outputs.iterdir() if p.name.endswith(".notes"))
            assert left == len(range(0, n, 10)), "the sweep removed a user's file"
    print(f"load average before: {load[0]:.2f} (1 min), {os.cpu_count()} cores; "
          f"after: {os.getloadavg()[0]:.2f}")
    print(f"{'finished outputs':>17} {'plan s':>8} {'sweep+skip s':>13} {'total s':>8} "
          f"{'spread s':>9} {'peak MB':>8}")
    medians = {}
    for n in args.sizes:
        totals = [x["total_s"] for x in runs[n]]
        medians[n] = statistics.median(totals)
        print(f"{n:>17} {statistics.median(x['plan_s'] for x in runs[n]):>8.2f} "
              f"{statistics.median(x['prepare_s'] for x in runs[n]):>13.2f} {medians[n]:>8.2f} "
              f"{max(totals) - min(totals):>9.2f} {max(x['peak_mb'] for x in runs[n]):>8.0f}")
    small, large = min(args.sizes), max(args.sizes)
    print(f"ratio {large}/{small}: {medians[large] / medians[small]:.1f} "
          f"(sizes {large / small:.0f}x; linear: about the same)")


if __name__ == "__main__":
    main()
