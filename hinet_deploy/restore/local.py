"""The local runner: a plan carried out in this process, streamed, resumable, with progress.

Images flow through three overlapping stages (read and decode, restore, write) and each video
through decode, restore and encode (runtime.stream). Every output is written under a temporary name
and renamed when complete; an input that fails is reported by name and the rest still run.
"""
from __future__ import annotations

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.progress import progress_bar, say
from hinet_deploy.restore.files import read_image, restore_file, write_image
from hinet_deploy.restore.plan import Job, Plan
from hinet_deploy.restore.report import Report, RestoreOptions, prepare
from hinet_deploy.runtime.stream import pipelined


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
        for job, image, pixels, error in pipelined(restore, map(read_image, jobs)):
            if error is None:
                try:
                    write_image(job, pixels, image, options.jpeg_quality)
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
            frames = restore_file(job, restorer, options.jpeg_quality, options.video, log=log,
                                  on_frame=lambda: bar.update(1), total=total)
        except HinetDeployError as exc:
            report.fail(job.source, str(exc), log)
            return
    report.restored.append(job.output)
    report.frames += frames


def run_restore(plan: Plan, restorer, options: RestoreOptions, log=None) -> Report:
    """Restores what the plan says; existing outputs are skipped unless options.overwrite."""
    log = log or say
    report, todo = prepare(plan, options, log)
    images = [j for j in todo if not j.is_video]
    if images:
        _restore_images(images, restorer, options, report, log)
    for job in (j for j in todo if j.is_video):
        _restore_video(job, restorer, options, report, log)
    return report
