"""How every check times its contenders: side by side, in alternated rounds.

Each contender runs once per round, round after round, and the first of each round rotates, so a
slow phase of a noisy machine hits all of them alike and no contender always follows the same one
(a fixed order once made the Restorer look 14 % faster than the session it wraps).
"""
from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Hashable


def alternated_rounds(runners: dict[Hashable, Callable[[], object]], repeats: int,
                      on_round: Callable[[int], None] | None = None) -> dict[Hashable, list[float]]:
    """Seconds of each runner's calls, `repeats` rounds of one call each (no warm-up here: callers
    warm up the way their measure needs)."""
    keys = list(runners)
    times: dict[Hashable, list[float]] = {key: [] for key in keys}
    for round_index in range(repeats):
        shift = round_index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            start = time.perf_counter()
            runners[key]()
            times[key].append(time.perf_counter() - start)
        if on_round is not None:
            on_round(round_index + 1)
    return times


def spread_ms(seconds: list[float]) -> dict:
    """Median, min and max of a contender's times, in ms, with every run."""
    return {"median_ms": 1000 * statistics.median(seconds), "min_ms": 1000 * min(seconds),
            "max_ms": 1000 * max(seconds), "runs_ms": [1000 * v for v in seconds]}


def device_name() -> str:
    """The CPU's model name, and the GPU's where PyTorch sees one: what a measurement ran on."""
    cpu = f"CPU: {platform.processor() or platform.machine()}"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = f"CPU: {line.split(':', 1)[1].strip()}"
                break
    except OSError:
        pass
    try:
        import torch
    except ImportError:
        return cpu
    return f"{cpu}; GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else cpu
