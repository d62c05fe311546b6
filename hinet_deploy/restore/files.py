"""One input restored into its output, the steps both runners use: read, restore, write for an
image, decode-restore-encode for a video (optionally one span of it)."""
from __future__ import annotations

from pathlib import Path

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.restore.plan import Job
from hinet_deploy.restore.report import RestoreOptions
from hinet_deploy.runtime.image_files import read_image_file, write_image_file
from hinet_deploy.runtime.video import restore_video


def read_image(job: Job, max_pixels: int | None = None):
    """(job, the image file, None) or (job, None, why it cannot be read)."""
    try:
        return job, read_image_file(job.source, max_pixels), None
    except HinetDeployError as exc:
        return job, None, str(exc)


def write_image(job: Job, pixels, image, jpeg_quality: int) -> None:
    write_image_file(job.output, pixels, image, jpeg_quality)


def restore_file(job: Job, restorer, options: RestoreOptions, span=None, log=None,
                 **progress) -> int:
    """Restores one local input into its output; returns the frames restored (0 for an image).
    `log` hears what was done that the user should know; `progress`: restore_video's on_frame and
    total callbacks."""
    if job.is_video:
        return restore_video(Path(job.source), Path(job.output), restorer, options.video,
                             span=span, log=log, max_pixels=options.max_pixels, **progress).frames
    _, image, error = read_image(job, options.max_pixels)
    if error is not None:
        raise HinetDeployError(error)
    for note in image.notes if log is not None else ():
        log(note)
    write_image(job, restorer(image.pixels), image, options.jpeg_quality)
    return 0
