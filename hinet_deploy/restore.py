"""`hinet-deploy restore`: photos, folders and videos through a model, streamed, resumable, with
progress.

Inputs are planned first (what goes where, what already exists), so usage errors cost nothing.
Then images flow through three overlapping stages (read and decode, restore, write) and each video
through decode, restore and encode (runtime.stream). Every output is written under a temporary name
and renamed when complete; an input that fails is reported by name and the rest still run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.progress import progress_bar, say
from hinet_deploy.runtime.image_files import (DEFAULT_JPEG_QUALITY, FORMATS, read_image_file,
                                              write_image_file)
from hinet_deploy.runtime.stream import pipelined
from hinet_deploy.runtime.video import VIDEO_SUFFIXES, VideoOptions, restore_video


@dataclass(frozen=True)
class Job:
    source: Path | str  # a str where it is a filesystem URI (restore --ray only)
    output: Path | str

    @property
    def is_video(self) -> bool:
        return Path(str(self.source)).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # known bad before any work
    ignored: int = 0  # files in folders that are neither images nor videos


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in FORMATS else "video" if suffix in VIDEO_SUFFIXES else None


NOT_RESTORABLE = (f"not an image or video this command restores ({', '.join(sorted(FORMATS))}, "
                  f"{', '.join(sorted(VIDEO_SUFFIXES))})")


def _walk(folder: Path, skip: Path, plan: Plan):
    """Files under `folder` (sorted, recursive), leaving out the output folder; unreadable
    sub-folders are failures, not crashes."""
    def failed(exc: OSError):
        plan.failed.append((Path(exc.filename or folder), f"cannot read the folder: {exc.strerror}"))

    for root, dirs, files in os.walk(folder, onerror=failed):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if (root_path / d).resolve() != skip)
        for name in sorted(files):
            yield root_path / name


def plan_jobs(inputs: list[Path], out_dir: Path) -> Plan:
    """Which output each input becomes: a file goes to OUT/name, a folder's files to OUT/their path
    inside it. Missing inputs and two inputs landing on one output are usage errors."""
    plan, skip = Plan(), out_dir.resolve()
    for given in inputs:
        if not given.exists():
            raise HinetDeployError(f"input {given} does not exist")
        if given.is_dir():
            if given.resolve() == skip:
                raise HinetDeployError(f"-o {out_dir} is the input folder {given}: the outputs "
                                       f"would replace the inputs; choose another folder")
            for path in _walk(given, skip, plan):
                if _kind(path) is None:
                    plan.ignored += 1
                else:
                    plan.jobs.append(Job(path, out_dir / path.relative_to(given)))
        elif _kind(given) is None:
            plan.failed.append((given, NOT_RESTORABLE))
        else:
            plan.jobs.append(Job(given, out_dir / given.name))
    seen: dict[Path, Path] = {}
    for job in plan.jobs:
        if job.output.resolve() == job.source.resolve():
            raise HinetDeployError(f"{job.source} would be overwritten by its own output: choose an "
                                   f"-o outside the input folders")
        other = seen.setdefault(job.output, job.source)
        if other != job.source:
            raise HinetDeployError(f"{other} and {job.source} would both be written to {job.output}")
    return plan


@dataclass
class RestoreOptions:
    overwrite: bool = False
    quiet: bool = False
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    video: VideoOptions = field(default_factory=VideoOptions)


@dataclass
class Report:
    restored: list[Path] = field(default_factory=list)
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    frames: int = 0

    def fail(self, source, error: str, log) -> None:
        """An input that could not be restored: listed at the end, and said as it happens."""
        self.failed.append((source, error))
        log(f"failed: {source}: {error}")


def _load(job: Job):
    try:
        return job, read_image_file(job.source), None
    except HinetDeployError as exc:
        return job, None, str(exc)


def _restore_images(jobs: list[Job], restorer, options: RestoreOptions, report: Report, log):
    def restore(loaded):
        job, image, error = loaded
        if error is not None:
            return job, image, None, error
        try:
            return job, image, restorer(image.pixels), None
        except HinetDeployError as exc:
            return job, image, None, str(exc)

    with progress_bar(len(jobs), "images", "img", quiet=options.quiet) as bar:
        for job, image, pixels, error in pipelined(restore, map(_load, jobs)):
            if error is None:
                try:
                    write_image_file(job.output, pixels, image, options.jpeg_quality)
                    report.restored.append(job.output)
                except HinetDeployError as exc:
                    error = str(exc)
            if error is not None:
                report.fail(job.source, error, log)
            bar.update(1)


def _restore_video(job: Job, restorer, options: RestoreOptions, report: Report, log):
    with progress_bar(None, job.source.name, "frame", quiet=options.quiet) as bar:
        def total(frames):
            bar.total = frames
            bar.refresh()

        try:
            result = restore_video(job.source, job.output, restorer, options.video,
                                   on_frame=lambda: bar.update(1), total=total)
        except HinetDeployError as exc:
            report.fail(job.source, str(exc), log)
            return
    report.restored.append(job.output)
    report.frames += result.frames


def _start(plan: Plan, options: RestoreOptions, log, exists=None) -> tuple[Report, list[Job]]:
    """The report so far (inputs known bad, named) and the jobs to run (outputs that exist are
    skipped unless options.overwrite)."""
    exists = exists or (lambda output: output.exists())
    report = Report()
    for path, error in plan.failed:
        report.fail(path, error, log)
    todo = [j for j in plan.jobs if options.overwrite or not exists(j.output)]
    report.skipped = len(plan.jobs) - len(todo)
    return report, todo


def run_restore(plan: Plan, restorer, options: RestoreOptions, log=None) -> Report:
    """Restores what the plan says; existing outputs are skipped unless options.overwrite."""
    log = log or say
    report, todo = _start(plan, options, log)
    images = [j for j in todo if not j.is_video]
    if images:
        _restore_images(images, restorer, options, report, log)
    for job in (j for j in todo if j.is_video):
        _restore_video(job, restorer, options, report, log)
    return report


@dataclass
class RayOptions:
    address: str | None = None  # None: start a local Ray and shut it down at the end
    workers: int = 1
    gpus_per_worker: float = 0
    threads_per_worker: int = 1


def run_restore_ray(plan: Plan, model: Path, restorer_options: dict, options: RestoreOptions,
                    ray_options: RayOptions, log=None) -> Report:
    """The same plan, skips, outputs and report as run_restore, on a Ray cluster (cluster.py)."""
    from hinet_deploy.cluster import RayRuntime, output_exists, restore_files

    log = log or say
    report, todo = _start(plan, options, log, output_exists)
    if not todo:
        return report
    write_options = {"jpeg_quality": options.jpeg_quality, "video": options.video}
    with RayRuntime(ray_options.address):
        rows = restore_files(todo, model, restorer_options, write_options,
                             workers=ray_options.workers,
                             gpus_per_worker=ray_options.gpus_per_worker,
                             threads_per_worker=ray_options.threads_per_worker,
                             quiet=options.quiet)
    by_source = {row["source"]: row for row in rows}
    for job in todo:
        error = by_source[str(job.source)]["error"]
        if error:
            report.fail(job.source, error, log)
        else:
            report.restored.append(job.output)
    return report


def summary(report: Report, plan: Plan) -> str:
    parts = [f"restored {len(report.restored)}"]
    if report.frames:
        parts[0] += f" ({report.frames} video frames)"
    if report.skipped:
        parts.append(f"skipped {report.skipped} whose output exists (--overwrite to redo them)")
    if plan.ignored:
        parts.append(f"ignored {plan.ignored} files that are neither images nor videos")
    if report.failed:
        parts.append(f"{len(report.failed)} failed: "
                     + "; ".join(f"{path} ({error})" for path, error in report.failed))
    return ", ".join(parts)
