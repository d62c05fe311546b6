"""`restore --ray` against the single-process command on one folder: images per second with 1 and 2
Ray workers (one thread each) and the single process with one thread, and Ray's overhead per image.
With --videos: whole videos per worker against keyframe-aligned segments on every worker, for one
and for two videos on 2 workers.

    python benchmarks/ray_restore.py [--photos 32] [--rounds 2] [--videos]

Each contender is the real command in a child process (`hinet-deploy restore ... --overwrite`), so
the times include everything a user waits for: for Ray, starting a local instance, shipping the
model, starting the actors and shutting down. The contenders take turns, round after round.
Overhead per image = (time with 1 Ray worker - time single-process) / photos.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--videos", action="store_true")
    args = parser.parse_args()
    if args.videos:
        videos(args.rounds)
        return

    from restore_pipeline import demo_graph, make_photos  # benchmarks/ is on the path as a script

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        graph = demo_graph(tmp)
        make_photos(tmp / "in", args.photos)
        base = [sys.executable, "-m", "hinet_deploy.cli", "restore", str(tmp / "in"), "--model",
                str(graph), "--quiet", "--overwrite"]
        contenders = {"single process, 1 thread": ["--threads", "1"],
                      "Ray, 1 worker x 1 thread": ["--ray", "--workers", "1"],
                      "Ray, 2 workers x 1 thread": ["--ray", "--workers", "2"]}

        seconds = {name: [] for name in contenders}
        names = list(contenders)
        for r in range(args.rounds):
            for name in names[r % 3:] + names[:r % 3]:
                out = tmp / ("out-" + name.split(",")[0].replace(" ", "-"))
                start = time.perf_counter()
                subprocess.run(base + ["-o", str(out)] + contenders[name], check=True,
                               capture_output=True)
                seconds[name].append(time.perf_counter() - start)
        print(f"{args.photos} photos (600x400, 640x427, 512x512), demo model, ONNX Runtime, "
              f"default mode; {os.cpu_count()} CPU cores; median of {args.rounds} alternated "
              f"rounds\n")
        print("| contender | seconds | images/s | vs single process |\n|---|---|---|---|")
        single = statistics.median(seconds[names[0]])
        for name, values in seconds.items():
            median = statistics.median(values)
            print(f"| {name} | {median:.1f} ({min(values):.1f}-{max(values):.1f}) | "
                  f"{args.photos / median:.2f} | {single / median:.2f}x |")
        overhead = (statistics.median(seconds[names[1]]) - single) / args.photos
        print(f"\nRay's overhead per image (1 worker vs single process): {overhead * 1000:.0f} ms")


def videos(rounds: int, frames: int = 48) -> None:
    """Whole videos against segments, 2 workers x 1 thread, in one Ray instance, alternated."""
    from hinet_deploy.restore.cluster import RayRuntime, restore_files
    from hinet_deploy.restore.plan import VIDEO, Job
    from hinet_deploy.restore.report import RestoreOptions
    from restore_pipeline import demo_graph, make_video

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        graph = demo_graph(tmp)
        for name in ("a.mp4", "b.mp4"):
            make_video(tmp / name, frames, keyint=12)
        write = RestoreOptions(quiet=True)
        results = {}
        with RayRuntime(None):
            for count in (1, 2):
                jobs = [Job(tmp / n, tmp / "out" / n, VIDEO) for n in ("a.mp4", "b.mp4")[:count]]
                for r in range(rounds):
                    for split in ((False, True) if r % 2 == 0 else (True, False)):
                        start = time.perf_counter()
                        rows = restore_files(jobs, graph, {}, write, workers=2, gpus_per_worker=0,
                                             threads_per_worker=1, quiet=True, split_videos=split)
                        assert not any(row["error"] for row in rows), rows
                        results.setdefault((count, split), []).append(time.perf_counter() - start)
        print(f"2 Ray workers x 1 thread, {frames}-frame 640x360 H.264 videos (a keyframe every 12 "
              f"frames), demo model; median of {rounds} alternated rounds\n")
        print("| videos | whole videos per worker | segments on every worker | segments / whole |")
        print("|---|---|---|---|")
        for count in (1, 2):
            whole = statistics.median(results[(count, False)])
            split = statistics.median(results[(count, True)])
            print(f"| {count} | {whole:.1f} s ({count * frames / whole:.2f} frames/s) | {split:.1f} s "
                  f"({count * frames / split:.2f} frames/s) | {whole / split:.2f}x faster |")


if __name__ == "__main__":
    main()
