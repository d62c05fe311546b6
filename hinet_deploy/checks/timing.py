"""How every check times its contenders: side by side, in alternated rounds.

Each contender runs once per round, round after round, and the first of each round rotates, so a
slow phase of a noisy machine hits all of them alike and no contender always follows the same one
(a fixed order once made the Restorer look 14 % faster than the session it wraps).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import statistics
import sys
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


# glibc's mallopt parameters (malloc.h) and its defaults on 64-bit Linux.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
KEPT_FREE_BYTES = 1 << 30  # free memory glibc may keep before returning any to the system


@contextlib.contextmanager
def freed_memory_kept():
    """glibc keeps freed memory in the process (no per-tensor mmap, no trimming) for the block;
    yields what the timing ran under, in words.

    PyTorch on a CPU allocates every intermediate tensor from malloc. In glibc's default regime,
    whether a large tensor reuses pages or faults fresh ones in depends on the process's history,
    and that decides much of a wide network's CPU time: the official MPRNet deblurring network
    (96 channels, 256x256, 2 threads) ran in 6.0 s in one plain process and in 4.9 s with freed
    memory kept; HINet (gopro) in 1.07 s both ways. So a speed-up measured in the default regime
    is partly allocator luck. Kept, every run reuses its pages, as PyTorch's caching allocator does
    on a GPU, the paper's setting. Elsewhere (not glibc) nothing changes and the text says so.
    Afterwards glibc's default limits are back and the kept memory is returned.
    """
    libc = None
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            if not (libc.mallopt(_M_MMAP_MAX, 0) == 1 and
                    libc.mallopt(_M_TRIM_THRESHOLD, KEPT_FREE_BYTES) == 1):
                libc = None
        except (OSError, AttributeError):
            libc = None
    if libc is None:
        yield "the C library's allocator, as it comes (not glibc)"
        return
    try:
        yield (f"glibc with freed memory kept (mallopt M_MMAP_MAX 0, M_TRIM_THRESHOLD "
               f"{KEPT_FREE_BYTES >> 20} MB): each run reuses pages instead of faulting fresh ones in")
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)


# Over this load average per core the machine was busy while a check timed: its numbers mislead
# (a loaded run printed a 2.26x speed-up where the quiet machine gives 12x).
BUSY_LOAD_PER_CORE = 0.5


class MachineLoad:
    """The 1-minute load average before and after a timed check, and the warning a busy machine
    deserves: `with MachineLoad() as load: ...; print(load.report())`."""

    def __enter__(self):
        self.before = os.getloadavg()[0]
        return self

    def __exit__(self, *exc):
        self.after = os.getloadavg()[0]
        return False

    def report(self) -> str:
        cores = os.cpu_count() or 1
        line = (f"load average (1 min) before {self.before:.2f}, after {self.after:.2f}, on "
                f"{cores} cores")
        if max(self.before, self.after) > BUSY_LOAD_PER_CORE * cores:
            line += (f"\nwarning: the machine was busy (load over {BUSY_LOAD_PER_CORE:g} per "
                     f"core): these timings mislead; run again on a quiet machine")
        return line

