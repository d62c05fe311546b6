"""Restoring across machines with Ray Data: `hinet-deploy restore --ray`, and `restore_dataset` for
pipelines that already hold a `ray.data.Dataset` of images.

Ray Data's `map_batches` with a class runs a pool of stateful actors: each opens the model once
(an engine once per GPU through `num_gpus`, a graph or checkpoint once per actor) and then restores
row after row. The model's files travel through Ray's object store, so the nodes need no shared
filesystem for them. Actors are restarted when their process dies, and their tasks retried
(`max_restarts` / `max_task_retries` -1); outputs are written under a temporary name and renamed,
so a retried row writes the same file again, whole, and never leaves a partial one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.lazy import require

# Ray's own recovery: restart a dead actor and retry its tasks, as many times as it takes.
FAULT_TOLERANCE = {"max_restarts": -1, "max_task_retries": -1}


def _ray():
    return require("ray", "pip install 'hinet-deploy[cluster]'", "restoring with Ray")


def model_files(model: Path) -> dict[str, bytes]:
    """The files that make up a model, by name: an engine brings its sidecar and the graph the
    sidecar names (relative paths), a graph or checkpoint is one file."""
    model = Path(model)
    files = {model.name: model.read_bytes()}
    if model.suffix == ".engine":
        from hinet_deploy.engines.sidecar import read_sidecar, sidecar_path

        sidecar = sidecar_path(model)
        files[sidecar.name] = sidecar.read_bytes()
        graph = read_sidecar(model).path_fact("onnx", model)
        if graph is not None and Path(graph).is_file():
            files[Path(graph).name] = Path(graph).read_bytes()
    return files


class _ModelActor:
    """What every actor does first: unpack the model's files locally and open one Restorer."""

    def __init__(self, files, name: str, restorer_options: dict):
        from hinet_deploy.runtime import Restorer

        ray = _ray()
        if isinstance(files, ray.ObjectRef):
            files = ray.get(files)
        self.folder = Path(tempfile.mkdtemp(prefix="hinet-deploy-model-"))
        for file_name, data in files.items():
            (self.folder / file_name).write_bytes(data)
        self.restorer = Restorer(self.folder / name, **restorer_options)


class FileRestorer(_ModelActor):
    """Rows {source, output} (paths): reads, restores and writes each; returns the error per row
    ("" when it succeeded), as the single-process command reports it."""

    def __init__(self, files, name: str, restorer_options: dict, write_options: dict):
        super().__init__(files, name, restorer_options)
        self.jpeg_quality = write_options["jpeg_quality"]
        self.video = write_options["video"]

    def _one(self, source: Path, output: Path) -> str:
        from hinet_deploy.runtime.image_files import read_image_file, write_image_file
        from hinet_deploy.runtime.video import VIDEO_SUFFIXES, restore_video

        try:
            if source.suffix.lower() in VIDEO_SUFFIXES:
                restore_video(source, output, self.restorer, self.video)
            else:
                image = read_image_file(source)
                write_image_file(output, self.restorer(image.pixels), image, self.jpeg_quality)
        except HinetDeployError as exc:
            return str(exc)
        return ""

    def __call__(self, batch: dict) -> dict:
        errors = [self._one(Path(s), Path(o)) for s, o in zip(batch["source"], batch["output"])]
        return {"source": batch["source"], "output": batch["output"],
                "error": np.array(errors, dtype=object), "pid": np.full(len(errors), os.getpid())}


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


def _map_options(workers: int, gpus_per_worker: float, threads_per_worker: int) -> dict:
    return {"concurrency": workers, "num_gpus": gpus_per_worker, "num_cpus": threads_per_worker,
            "batch_size": 1, **FAULT_TOLERANCE}


def restore_dataset(dataset, model, *, column: str = "image", workers: int = 1,
                    gpus_per_worker: float = 0, threads_per_worker: int = 1, **restorer_options):
    """A `ray.data.Dataset` whose `column` holds images (HxWx3 uint8/uint16/float arrays, any size)
    -> the same dataset with that column restored by `model` (.pth, .onnx or .engine), lazily, on
    `workers` actors. Other columns pass through.

        ds = ray.data.read_images("s3://bucket/frames/", mode="RGB")
        clean = restore_dataset(ds, "gopro.onnx", workers=4, gpus_per_worker=1)
        clean.write_images("s3://bucket/restored/", column="image")
    """
    ray = _ray()
    model = Path(model)
    if not model.is_file():
        raise HinetDeployError(f"model {model} does not exist")
    restorer_options = {"threads": threads_per_worker, **restorer_options} \
        if model.suffix == ".onnx" else restorer_options
    files = ray.put(model_files(model))
    return dataset.map_batches(
        ArrayRestorer, fn_constructor_kwargs={"files": files, "name": model.name,
                                              "restorer_options": restorer_options,
                                              "column": column},
        **_map_options(workers, gpus_per_worker, threads_per_worker))


def restore_files(jobs, model: Path, restorer_options: dict, write_options: dict, *,
                  workers: int, gpus_per_worker: float, threads_per_worker: int,
                  quiet: bool) -> list[dict]:
    """The restore command's jobs on Ray: [{source, output, error, pid}] per job."""
    ray = _ray()
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = not quiet
    if model.suffix == ".onnx":
        restorer_options = {"threads": threads_per_worker, **restorer_options}
    files = ray.put(model_files(model))
    rows = [{"source": str(job.source), "output": str(job.output)} for job in jobs]
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * workers)))
    restored = dataset.map_batches(
        FileRestorer, fn_constructor_kwargs={"files": files, "name": model.name,
                                             "restorer_options": restorer_options,
                                             "write_options": write_options},
        **_map_options(workers, gpus_per_worker, threads_per_worker))
    return restored.take_all()


class RayRuntime:
    """A Ray connection for one command: the cluster at `address`, or a local instance started
    here and shut down at the end."""

    def __init__(self, address: str | None):
        self.address = address

    def __enter__(self):
        import logging

        ray = _ray()
        try:  # the workers' own logs stay in Ray's session folder; errors come back per row
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise HinetDeployError(f"cannot connect to Ray at {self.address}: {exc}") from exc
        return self

    def __exit__(self, *exc):
        _ray().shutdown()
        return False
