"""Progress bars for long work: tqdm on stderr, silent when stderr is not a terminal (logs, CI,
pipes) or when the caller asks for quiet. stdout stays for results."""
from __future__ import annotations

import sys


def progress_bar(total: int | None, desc: str, unit: str = "it", quiet: bool = False):
    """A tqdm bar (a context manager with .update(n)); shows rate and ETA."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=True if quiet else None)  # None: tqdm's own "only on a terminal"


def say(message: str) -> None:
    """One line of what long work is doing, on stderr (stdout is for results), flushed at once."""
    print(message, file=sys.stderr, flush=True)
