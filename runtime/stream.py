"""Overlap for streams of frames: reading ahead in one thread and inference in another while the
caller writes, with bounded queues so that memory does not grow with the stream's length.

ONNX Runtime, PyTorch and TensorRT release the GIL while they compute, and so do image codecs and
FFmpeg, so the three stages run at the same time on different cores.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator

from hinet_deploy.common.errors import HinetDeployError

DEFAULT_DEPTH = 2  # items waiting in each queue: enough to hide a slow read, small for memory
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def read_ahead(items: Iterable, depth: int = DEFAULT_DEPTH) -> Iterator:
    """Yields `items` in order while a background thread pulls the next ones (up to `depth` ahead).
    An exception in the iterable is raised here, at its place in the stream. Leaving the loop early
    stops the thread."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        # Queue(maxsize=0 or less) is unbounded: memory would grow with the stream's length.
        raise HinetDeployError(f"depth must be a whole number of at least 1, not {depth!r}")
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pull():
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised in its thread
            put(_Failure(exc))

    thread = threading.Thread(target=pull, name="hinet-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def pipelined(fn: Callable, items: Iterable, depth: int = DEFAULT_DEPTH) -> Iterator:
    """fn(item) for each item, in order, in three overlapping stages: `items` is pulled in one
    background thread, fn runs in a second, and the caller's loop body (writing, encoding) in its
    own thread while the next results are computed."""
    return read_ahead((fn(item) for item in read_ahead(items, depth)), depth)
