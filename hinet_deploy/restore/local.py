"""The local runner: a plan carried out in this process, streamed, resumable, with progress.

Images flow through three overlapping stages (read and decode, restore, write) and each video
through decode, restore and encode (runtime.stream). Every output is written under a temporary name
and renamed when complete; an input that fails is reported by name and the rest still run.
"""
from __future__ import annotations

from hinet_deploy.common.errors import DiskFullError
from hinet_deploy.common.progress import progress_bar, say
from hinet_deploy.restore.files import read_image, restore_file, write_image
from hinet_deploy.restore.plan import Job, Plan
from hinet_deploy.restore.report import Report, RestoreOptions, failure_text, prepare
from hinet_deploy.runtime.stream import pipelined


def _restore_images(jobs: list[Job], restorer, options: RestoreOptions, report: Report, log) -> bool:
    """False where the run must stop (a full disk), with the report saying why."""
    def restore(loaded):
        job, image, error = loaded
        if error is not None:
            return job, image, None, error
        for note in image.notes:
            log(note)
        try:
            return job, image, restorer(image.pixels), None
        except Exception as exc:  # any error is this input's failure; the run goes on
            return job, image, None, failure_text(exc)

    with progress_bar(len(jobs), "images", "img", quiet=options.quiet) as bar:
        for done, (job, image, pixels, error) in enumerate(
                pipelined(restore, (read_image(j, options.max_pixels) for j in jobs)), 1):
            if error is None:
                try:
                    write_image(job, pixels, image, options.jpeg_quality)
                    report.restored.append(job.output)
                except DiskFullError as exc:
                    report.fail(job.source, str(exc), log)
                    report.stopped, report.not_tried = str(exc), len(jobs) - done
                    return False
                except Exception as exc:
                    error = failure_text(exc)
            if error is not None:
                report.fail(job.source, error, log)
            bar.update(1)
    return True


def _restore_video(job: Job, restorer, options: RestoreOptions, report: Report, log) -> bool:
    """False where the run must stop (a full disk), with the report saying why."""
    with progress_bar(None, job.source.name, "frame", quiet=options.quiet) as bar:
        def total(frames):
            bar.total = frames
            bar.refresh()

        try:
            frames = restore_file(job, restorer, options, log=log,
                                  on_frame=lambda: bar.update(1), total=total)
        except DiskFullError as exc:
            report.fail(job.source, str(exc), log)
            report.stopped = str(exc)
            return False
        except Exception as exc:
            report.fail(job.source, failure_text(exc), log)
            return True
    report.restored.append(job.output)
    report.frames += frames
    report.videos += 1
    return True


def run_restore(plan: Plan, restorer, options: RestoreOptions, log=None) -> Report:
    """Restores what the plan says; existing outputs are skipped unless options.overwrite."""
    log = log or say
    report, todo = prepare(plan, options, log)
    images = [j for j in todo if not j.is_video]
    videos = [j for j in todo if j.is_video]
    if images and not _restore_images(images, restorer, options, report, log):
        report.not_tried += len(videos)
        return report
    for index, job in enumerate(videos):
        if not _restore_video(job, restorer, options, report, log):
            report.not_tried = len(videos) - index - 1
            break
    return report
