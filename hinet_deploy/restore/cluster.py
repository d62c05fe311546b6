"""Restoring across machines with Ray Data: `hinet-deploy restore --ray`, and `restore_dataset` for
pipelines that already hold a `ray.data.Dataset` of images.

Ray Data's `map_batches` with a class runs a pool of stateful actors: each opens the model once
(an engine once per GPU through `num_gpus`, a graph or checkpoint once per actor) and then restores
row after row. The model's files travel through Ray's object store, so the nodes need no shared
filesystem for them. Actors are restarted when their process dies, and their tasks retried (Ray
Data's own defaults for actor pools: `max_restarts` and `max_task_retries` -1; the fault test
kills a worker to hold it to that); outputs are written under a temporary name and renamed, so a
retried row writes the same file again, whole, and never leaves a partial one.
"""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hinet_deploy.common.errors import HinetDeployError, first_line
from hinet_deploy.common.lazy import require
from hinet_deploy.common.progress import say
from hinet_deploy.restore.files import restore_file
from hinet_deploy.restore.plan import Job, Plan
from hinet_deploy.restore.report import (Report, RestoreOptions, failure_text, prepare,
                                         sweep_partials)
from hinet_deploy.restore.uri import download, is_uri, upload


def _ray():
    return require("ray", "restoring with Ray")


MODEL_FOLDER_PREFIX = "hinet-deploy-model-"


def remove_stale_model_folders(root: Path | None = None) -> list[Path]:
    """Removes the model folders of actors whose process is gone (killed, so nothing of theirs
    ran at exit); returns them. A folder's name holds its actor's process id."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for folder in root.glob(f"{MODEL_FOLDER_PREFIX}*"):
        pid = folder.name[len(MODEL_FOLDER_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except PermissionError:  # alive, another user's
            pass
    return removed


class _ModelActor:
    """What every actor does first: unpack the model's files locally and open one Restorer."""

    def __init__(self, files, name: str, restorer_options: dict):
        from hinet_deploy.runtime import Restorer

        ray = _ray()
        if isinstance(files, ray.ObjectRef):
            files = ray.get(files)
        remove_stale_model_folders()
        self.folder = Path(tempfile.mkdtemp(prefix=f"{MODEL_FOLDER_PREFIX}{os.getpid()}-"))
        # Removed when the actor's process ends normally; a killed actor's folder is removed by
        # the next actor on the node (remove_stale_model_folders).
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, True)
        atexit.register(self._cleanup)
        for file_name, data in files.items():
            (self.folder / file_name).write_bytes(data)
        self.restorer = Restorer(self.folder / name, **restorer_options)


class FileRestorer(_ModelActor):
    """Rows {source, output, kind, start, end} (paths; a video segment's span, or -1): reads, restores
    and writes each; returns the error per row ("" when it succeeded), as the single-process
    command reports it."""

    def __init__(self, files, name: str, restorer_options: dict, options: RestoreOptions):
        super().__init__(files, name, restorer_options)
        self.options = options
        self.notes: list[str] = []

    def _one(self, source: str, output: str, kind: str, start: int, end: int) -> str:
        job = Job(source, output, kind)
        if is_uri(source) or is_uri(output):
            return self._through_local_files(job)
        span = None if start < 0 else (start, None if end < 0 else end)
        try:
            restore_file(Job(Path(source), Path(output), kind), self.restorer, self.options,
                         span=span, log=self.notes.append)
        except Exception as exc:  # one line for this row, as the local runner says it
            return failure_text(exc)
        return ""

    def _through_local_files(self, job: Job) -> str:
        """A URI input is downloaded, a URI output uploaded, around the restore of local files (a
        local side is used where it is). URI videos are never split, so there is no span here."""
        source, output = job.source, job.output
        with tempfile.TemporaryDirectory(prefix="hinet-deploy-row-") as tmp:
            local_in = Path(tmp) / ("in" + Path(source).suffix) if is_uri(source) else source
            local_out = Path(tmp) / ("out" + Path(output).suffix) if is_uri(output) else output
            if is_uri(source):
                try:
                    download(source, local_in)
                except OSError as exc:
                    return f"cannot read {source}: {exc}"
            error = self._one(str(local_in), str(local_out), job.kind, -1, -1)
            self.notes = [n.replace(str(local_in), source) for n in self.notes]
            if error:
                return error.replace(str(local_in), source)
            if is_uri(output):
                try:
                    upload(local_out, output)
                except OSError as exc:
                    return f"cannot write {output}: {exc}"
        return ""

    def __call__(self, batch: dict) -> dict:
        errors, notes = [], []
        for s, o, k, a, b in zip(batch["source"], batch["output"], batch["kind"], batch["start"],
                                 batch["end"]):
            self.notes = []  # what the local runner would say of this file, relayed to the driver
            errors.append(self._one(str(s), str(o), str(k), int(a), int(b)))
            notes.append("\n".join(self.notes))
        return {"source": batch["source"], "output": batch["output"],
                "error": np.array(errors, dtype=object), "notes": np.array(notes, dtype=object)}


class ArrayRestorer(_ModelActor):
    """Rows holding an image array in `column`: the column comes back restored."""

    def __init__(self, files, name: str, restorer_options: dict, column: str):
        super().__init__(files, name, restorer_options)
        self.column = column

    def __call__(self, batch: dict) -> dict:
        images = batch[self.column]
        restored = [self.restorer(image) for image in images]
        out = dict(batch)
        try:
            out[self.column] = np.stack(restored)
        except ValueError:  # images of different sizes
            out[self.column] = np.array(restored + [None], dtype=object)[:-1]
        return out


def _model_kwargs(model: Path, restorer_options: dict, threads_per_worker: int) -> dict:
    """The actors' model arguments: its files (as its backend lists them) once in the object
    store, its name, and the Restorer's options with the backend held to the worker's threads."""
    from hinet_deploy.runtime.backends import backend_class

    cls = backend_class(model, restorer_options.get("backend"))
    files = {path.name: path.read_bytes() for path in cls.model_files(model)}
    return {"files": _ray().put(files), "name": model.name,
            "restorer_options": {**cls.worker_options(threads_per_worker), **restorer_options}}


def _map_options(workers: int, gpus_per_worker: float, threads_per_worker: int) -> dict:
    from ray.data import ActorPoolStrategy

    # One row in flight per actor: Ray Data's default queues several on the first actor up, so
    # two whole videos on two workers ran one after the other on one of them (measured).
    return {"compute": ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
            "num_gpus": gpus_per_worker,
            "num_cpus": threads_per_worker, "batch_size": 1}


def restore_dataset(dataset, model, *, column: str = "image", workers: int = 1,
                    gpus_per_worker: float = 0, threads_per_worker: int = 1, **restorer_options):
    """A `ray.data.Dataset` whose `column` holds images (HxWx3 uint8/uint16/float arrays, any size)
    -> the same dataset with that column restored by `model` (.pth, .onnx or .engine), lazily, on
    `workers` actors. Other columns pass through.

        ds = ray.data.read_images("s3://bucket/frames/", mode="RGB")
        clean = restore_dataset(ds, "gopro.onnx", workers=4, gpus_per_worker=1)
        clean.write_images("s3://bucket/restored/", column="image")
    """
    model = Path(model)
    if not model.is_file():
        raise HinetDeployError(f"model {model} does not exist")
    kwargs = {**_model_kwargs(model, restorer_options, threads_per_worker), "column": column}
    return dataset.map_batches(ArrayRestorer, fn_constructor_kwargs=kwargs,
                               **_map_options(workers, gpus_per_worker, threads_per_worker))


def work_rows(jobs, workers: int, split_videos: bool | None) -> list[dict]:
    """One row per image and per video, or per keyframe-aligned segment of a video when videos are
    fewer than workers (split_videos None) or when asked (True): whole videos keep every worker
    busy without a join once there are enough of them."""
    from hinet_deploy.runtime.video import segments

    videos = [job for job in jobs if job.is_video]
    if split_videos is None:
        split_videos = 0 < len(videos) < workers
    rows = []
    for job in jobs:
        local = not is_uri(job.source) and not is_uri(job.output)  # segments are cut and joined here
        spans = segments(job.source, workers) if job.is_video and split_videos and local \
            else [(-1, -1)]
        for i, (start, end) in enumerate(spans):
            output = job.output if len(spans) == 1 else \
                job.output.with_name(f".{job.output.name}.segment{i}{job.output.suffix}")
            rows.append({"source": str(job.source), "output": str(output), "final": str(job.output),
                         "kind": job.kind,
                         "start": start if len(spans) > 1 else -1,
                         "end": -1 if end is None or len(spans) == 1 else end})
    return rows


def _join(rows: list[dict]) -> list[dict]:
    """Segments of each video joined in order into its output (and removed); one row per job."""
    from hinet_deploy.runtime.video import join_segments

    by_final: dict[str, list[dict]] = {}
    for row in rows:
        by_final.setdefault(row["final"], []).append(row)
    joined = []
    for final, parts in by_final.items():
        parts.sort(key=lambda r: r["start"])
        error = next((r["error"] for r in parts if r["error"]), "")
        notes = list(dict.fromkeys(n for r in parts for n in r.get("notes", "").split("\n") if n))
        if len(parts) > 1:
            try:
                if not error:
                    join_segments(Path(parts[0]["source"]), [Path(r["output"]) for r in parts],
                                  Path(final))
            except HinetDeployError as exc:
                error = str(exc)
            finally:
                for r in parts:
                    Path(r["output"]).unlink(missing_ok=True)
        joined.append({"source": parts[0]["source"], "output": final, "error": error,
                       "notes": notes})
    return joined


def quiet_ray_data(quiet: bool) -> None:
    """Ray Data's INFO lines off (and with `quiet` its warnings too): errors come back per row."""
    import logging

    try:  # what the first execution would do, done now so that the levels below stay
        from ray.data._internal.logging import configure_logging

        configure_logging()
    except ImportError:  # another Ray: its lines may show, nothing else changes
        pass
    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.WARNING)


def restore_files(jobs, model: Path, restorer_options: dict, options: RestoreOptions, *,
                  workers: int, gpus_per_worker: float, threads_per_worker: int,
                  quiet: bool, split_videos: bool | None = None) -> list[dict]:
    """The restore command's jobs on Ray: [{source, output, error}] per job."""
    ray = _ray()
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = not quiet
    kwargs = {**_model_kwargs(model, restorer_options, threads_per_worker),
              "options": options}
    rows = work_rows(jobs, workers, split_videos)
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * workers)))
    restored = dataset.map_batches(FileRestorer, fn_constructor_kwargs=kwargs,
                                   **_map_options(workers, gpus_per_worker, threads_per_worker))
    quiet_ray_data(quiet)  # Ray Data sets its loggers up when a dataset first runs: after that
    try:
        done = {r["output"]: r for r in restored.take_all()}
    except Exception as exc:  # Ray's wrappers of an actor's failure: the one line it stands for
        raise HinetDeployError(worker_failure(exc, model)) from None
    return _join([{**row, "error": done[row["output"]]["error"],
                   "notes": done[row["output"]]["notes"]} for row in rows])


def worker_failure(exc: BaseException, model: Path) -> str:
    """The line an error of the Ray workers stands for: a HinetDeployError raised in an actor (a
    model its machine cannot open: an engine without a GPU) as the local runner says it; else the
    error's type and first line, without Ray's tracebacks."""
    seen, todo = set(), [exc]
    while todo:
        error = todo.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, HinetDeployError):
            return str(error)
        todo += [getattr(error, "cause", None), error.__cause__, error.__context__]
    text = str(exc)
    marker = "HinetDeployError: "
    if marker in text:  # a cause Ray passed on only as text (an actor that died in __init__)
        return text.rsplit(marker, 1)[1].strip().splitlines()[0]
    return f"the Ray workers failed on {model.name}: {type(exc).__name__}: {first_line(exc)}"


CONNECT_TIMEOUT_S = 5.0


def reachable(address: str | None) -> None:
    """A HOST:PORT (or ray://HOST:PORT) address that accepts no connection within seconds is one
    line, instead of Ray's endless retries; None and `auto` are left to Ray."""
    if address in (None, "auto", "local"):
        return
    text = address.removeprefix("ray://")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise HinetDeployError(f"--ray-address {address} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise HinetDeployError(f"cannot reach Ray at {address}: {exc.strerror or exc} (is the "
                               f"cluster up? `ray start --head` starts one)") from exc


class RayRuntime:
    """A Ray connection for one command: the cluster at `address`, or a local instance started
    here and shut down at the end. `quiet`: what Ray's own C++ core writes to this process's
    stderr while it runs (a warning per actor pool among it) is kept in a file instead, and shown
    only if the run ends with an error."""

    def __init__(self, address: str | None, quiet: bool = False):
        self.address, self.quiet = address, quiet
        self.saved_fd, self.captured = None, None

    def __enter__(self):
        import logging

        ray = _ray()
        reachable(self.address)
        if self.quiet:
            self._capture_stderr()
        try:  # the workers' own logs stay in Ray's session folder; errors come back per row
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
            logging.getLogger("ray.data").setLevel(logging.WARNING)  # its per-dataset INFO lines
        except Exception as exc:  # Ray raises plain Exception when a local instance cannot start
            self._release_stderr(show=False)
            where = f"connect to Ray at {self.address}" if self.address else "start a local Ray"
            raise HinetDeployError(f"cannot {where}: {type(exc).__name__}: "
                                   f"{first_line(exc)}") from exc
        return self

    def _capture_stderr(self) -> None:
        sys.stderr.flush()
        self.captured = tempfile.TemporaryFile()
        self.saved_fd = os.dup(2)
        os.dup2(self.captured.fileno(), 2)

    def _release_stderr(self, show: bool) -> None:
        if self.saved_fd is None:
            return
        sys.stderr.flush()
        os.dup2(self.saved_fd, 2)
        os.close(self.saved_fd)
        self.saved_fd = None
        if show:
            self.captured.seek(0)
            sys.stderr.write(self.captured.read()[-4000:].decode(errors="replace"))
        self.captured.close()

    def __exit__(self, *exc):
        try:
            _ray().shutdown()
        finally:
            self._release_stderr(show=exc[0] is not None)
        return False


@dataclass
class RayOptions:
    address: str | None = None  # None: start a local Ray and shut it down at the end
    workers: int = 1
    gpus_per_worker: float = 0
    threads_per_worker: int = 1


def run_restore_ray(plan: Plan, model: Path, restorer_options: dict, options: RestoreOptions,
                    ray_options: RayOptions, log=None) -> Report:
    """The same plan, skips, outputs and report as the local runner, on a Ray cluster."""
    log = log or say
    report, todo = prepare(plan, options, log)
    if not todo:
        return report
    with RayRuntime(ray_options.address, quiet=options.quiet):
        rows = restore_files(todo, model, restorer_options, options,
                             workers=ray_options.workers,
                             gpus_per_worker=ray_options.gpus_per_worker,
                             threads_per_worker=ray_options.threads_per_worker,
                             quiet=options.quiet)
    sweep_partials(todo)  # a worker killed mid-file leaves its partial; Ray redid the file
    by_source = {row["source"]: row for row in rows}
    for job in todo:
        for note in by_source[str(job.source)]["notes"]:  # as the local runner says them
            log(note)
        error = by_source[str(job.source)]["error"]
        if error:
            report.fail(job.source, error, log)
            continue
        report.restored.append(job.output)
        if job.is_video and not is_uri(job.output):  # what the local runner counts as it goes
            from hinet_deploy.runtime.video import frame_count

            report.frames += frame_count(Path(job.output))
            report.videos += 1
    return report
