"""What a restore was asked to do beyond the plan (options) and what it did (the report), the same
for both runners."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hinet_deploy.restore.plan import Job, Plan
from hinet_deploy.common.errors import HinetDeployError, first_line
from hinet_deploy.common.files import remove_stale_partials
from hinet_deploy.restore.uri import exists, is_uri
from hinet_deploy.runtime.image_files import DEFAULT_JPEG_QUALITY
from hinet_deploy.runtime.video import VideoOptions

NAMED_IGNORED = 3  # ignored files named in the summary; the rest are counted


@dataclass
class RestoreOptions:
    overwrite: bool = False
    quiet: bool = False
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    video: VideoOptions = field(default_factory=VideoOptions)
    max_pixels: int | None = None  # per image or frame; None: common.untrusted.max_pixels()


@dataclass
class Report:
    restored: list[Path | str] = field(default_factory=list)
    skipped: int = 0
    failed: list[tuple[Path | str, str]] = field(default_factory=list)
    frames: int = 0
    videos: int = 0  # of the restored, how many are videos
    stopped: str | None = None  # why the run stopped before the end (a full disk)
    seconds: float | None = None  # the whole run, for the summary's rates
    not_tried: int = 0  # inputs left for a re-run when it stopped

    def fail(self, source, error: str, log) -> None:
        """An input that could not be restored: listed at the end, and said as it happens."""
        self.failed.append((source, error))
        log(f"failed: {source}: {error}")


def failure_text(exc: Exception) -> str:
    """The one line that says why an input failed: the message of an error a check foresaw
    (HinetDeployError), else the error's type and first line."""
    if isinstance(exc, HinetDeployError):
        return str(exc)
    return f"{type(exc).__name__}: {first_line(exc)}"


def sweep_partials(jobs) -> None:
    """Removes the temporary files that processes now gone left in the jobs' output folders: before
    a run (an earlier run killed), and after one whose workers were killed and replaced. One pass
    over each folder, however many outputs it holds."""
    folders = {Path(job.output).parent for job in jobs if not is_uri(job.output)}
    for folder in folders:
        remove_stale_partials(folder)


def prepare(plan: Plan, options: RestoreOptions, log) -> tuple[Report, list[Job]]:
    """The report so far (inputs known bad, named) and the jobs to run (outputs that exist are
    skipped unless options.overwrite)."""
    report = Report()
    for path, error in plan.failed:
        report.fail(path, error, log)
    sweep_partials(plan.jobs)  # what killed runs left half-written beside the outputs
    todo = [j for j in plan.jobs if options.overwrite or not exists(j.output)]
    report.skipped = len(plan.jobs) - len(todo)
    return report, todo


def two_significant(value: float) -> str:
    """A rate as people read it: two significant digits (0.052, 0.55, 5.5), whole from 10 up."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def summary(report: Report, plan: Plan, output=None) -> str:
    """The run in one line; `output` (the -o given): where it wrote, said last."""
    parts = [f"restored {len(report.restored)}"]
    if report.frames:
        parts[0] += f" ({report.frames} video frames)"
    if report.seconds is not None and report.restored:
        images = len(report.restored) - report.videos
        rate = f"{two_significant(images / report.seconds)} images/s" if not report.videos else \
            f"{two_significant(report.frames / report.seconds)} frames/s" if not images else None
        parts[0] += f" in {report.seconds:.1f} s" + (f" ({rate})" if rate else "")
    if report.skipped:
        parts.append(f"skipped {report.skipped} whose output exists (--overwrite to redo them)")
    if plan.ignored:
        named = ", ".join(str(p) for p in plan.ignored[:NAMED_IGNORED])
        more = len(plan.ignored) - NAMED_IGNORED
        parts.append(f"ignored {len(plan.ignored)} files that are neither images nor videos "
                     f"({named}{f' and {more} more' if more > 0 else ''})")
    if report.failed:
        parts.append(f"{len(report.failed)} failed: "
                     + "; ".join(f"{path} ({error})" for path, error in report.failed))
    if report.stopped:
        parts.append(f"stopped: {report.stopped}; {report.not_tried} not tried (a re-run restores "
                     f"them, keeping what finished)")
    if output is not None and (report.restored or report.skipped):
        parts.append(f"written to {output}")
    return ", ".join(parts)
