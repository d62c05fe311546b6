"""Host memory: what is available, and the peak a piece of work reached (Linux /proc)."""
from __future__ import annotations

import os
from pathlib import Path


def _status_kb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise ValueError(field)


def available_bytes() -> int | None:
    """Memory the system can give without swapping (MemAvailable), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class PeakMemory:
    """Peak resident memory of this process during a `with` block, in MB.

    Resets the kernel's high-water mark on entry (writing 5 to /proc/self/clear_refs, Linux 4.0+),
    so each block is measured alone even in one long process. `peak_mb` includes what was resident
    before; `added_mb` is the block's own working memory. NaN where the kernel does not offer it.
    """

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.before_mb = _status_kb("VmRSS") / 1024
        except (OSError, ValueError):
            self.before_mb = float("nan")
        self.peak_mb = self.added_mb = float("nan")
        return self

    def __exit__(self, *exc):
        try:
            self.peak_mb = _status_kb("VmHWM") / 1024
        except (OSError, ValueError):
            return False
        self.added_mb = self.peak_mb - self.before_mb
        return False


# Host memory one HINet run adds per input pixel, per unit of the network's width wf: the most of
# PyTorch (79) and ONNX Runtime (48) for the demo model (wf 16) at 256x256 to 1024x1024, CPU,
# batch 1 (PeakMemory around one run after a warm-up). Activations dominate, so it scales with wf.
BYTES_PER_PIXEL_PER_WF = 80
# Share of the memory available that one image may take before the Restorer tiles it: room for the
# caller's own buffers, decoders and the image itself.
DEFAULT_BUDGET_SHARE = 0.6


def estimated_run_bytes(wf: int, pixels: int) -> int:
    """Host memory a whole-image run of a HINet of width `wf` over `pixels` (N x H x W) adds."""
    return BYTES_PER_PIXEL_PER_WF * wf * pixels
