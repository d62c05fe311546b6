"""What each input becomes: the one restore planner, for local paths and filesystem URIs alike.

An input file goes to OUT/its name, a folder's files to OUT/their path inside it (recursively). The
kind of every input (image or video) is decided here, once, from its suffix; the runners read it
from the job. Plans that would lose data are refused before any work: two inputs written to one
output, an output written onto its own input, the output folder being an input folder. The same
file named twice is restored once.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.files import special_kind
from hinet_deploy.restore.uri import as_uri, filesystem, is_uri
from hinet_deploy.runtime.image_files import FORMATS
from hinet_deploy.runtime.video import VIDEO_SUFFIXES

IMAGE, VIDEO = "image", "video"
NOT_RESTORABLE = (f"not an image or video this command restores ({', '.join(sorted(FORMATS))}, "
                  f"{', '.join(sorted(VIDEO_SUFFIXES))})")


def kind_of(name) -> str | None:
    """IMAGE, VIDEO or None (a file this command does not restore), from the name's suffix."""
    suffix = Path(str(name)).suffix.lower()
    return IMAGE if suffix in FORMATS else VIDEO if suffix in VIDEO_SUFFIXES else None


@dataclass(frozen=True)
class Job:
    source: Path | str  # a str where it is a filesystem URI
    output: Path | str
    kind: str  # IMAGE or VIDEO

    @property
    def is_video(self) -> bool:
        return self.kind == VIDEO


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    failed: list[tuple[Path | str, str]] = field(default_factory=list)  # known bad before any work
    ignored: list[Path | str] = field(default_factory=list)  # files in folders: neither kind
    into_file: bool = False  # the output names the one file to write, not a folder


class _LocalTree:
    """Inputs and outputs on this machine."""

    def entry(self, given) -> str | None:
        """None (missing), "folder", "file", or what else it is (a FIFO, a socket, a device):
        never opened, since a FIFO with no writer blocks the run forever."""
        try:
            mode = os.stat(given).st_mode
        except OSError:
            return None
        if stat.S_ISDIR(mode):
            return "folder"
        return special_kind(mode) or "file"

    def files(self, folder, skip: str, plan: Plan):
        """(file, its path inside folder) under `folder`, sorted, recursive, leaving out the folder
        whose URI is `skip` (the output); unreadable sub-folders are failures, not crashes."""
        def failed(exc: OSError):
            plan.failed.append((Path(exc.filename or folder),
                                f"cannot read the folder: {exc.strerror}"))

        folder = Path(folder)
        for root, dirs, names in os.walk(folder, onerror=failed):
            root_path = Path(root)
            dirs[:] = sorted(d for d in dirs if as_uri(root_path / d) != skip)
            for name in sorted(names):
                path = root_path / name
                entry = self.entry(path)
                if entry not in ("file", None):  # None: a dangling link, failed when read
                    # A FIFO, socket or device is never opened: named as a failure where its
                    # name says image or video, else ignored like any file of neither kind.
                    if kind_of(name) is None:
                        plan.ignored.append(path)
                    else:
                        plan.failed.append((path, f"is {entry}, not a regular file: left alone"))
                    continue
                yield path, path.relative_to(folder).as_posix()

    def source(self, given):
        return Path(given)

    def join(self, output, relative: str):
        return Path(output) / relative


class _UriTree:
    """Inputs or outputs given as URIs (local paths among them read as file:// URIs), listed
    through the URI's filesystem."""

    def _info(self, given):
        fs, root = filesystem(self.source(given))
        return fs, root, fs.get_file_info(root)

    def entry(self, given) -> str | None:
        import pyarrow.fs as pafs

        kind = self._info(given)[2].type
        return None if kind == pafs.FileType.NotFound else \
            "folder" if kind == pafs.FileType.Directory else "file"

    def files(self, folder, skip: str, plan: Plan):
        import pyarrow.fs as pafs

        fs, root, _ = self._info(folder)
        uri = self.source(folder)
        prefix = uri[:len(uri) - len(root.lstrip("/"))] if root.lstrip("/") else uri
        found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        for path in sorted(f.path for f in found if f.type == pafs.FileType.File):
            source = prefix + path.lstrip("/")
            if not source.startswith(skip + "/"):
                yield source, path[len(root.rstrip("/")) + 1:]

    def source(self, given) -> str:
        return as_uri(given)

    def join(self, output, relative: str) -> str:
        return f"{str(output).rstrip('/')}/{relative}"


def output_is_file(inputs, output) -> bool:
    """Whether `output` names the one file to write (one input file and an output name with an
    image or video suffix that is not a folder already) rather than a folder; ambiguous cases are
    refused in one line."""
    kind = kind_of(output)
    tree = _UriTree() if any(is_uri(str(x)) for x in [*inputs, output]) else _LocalTree()
    if kind is None or tree.entry(output) == "folder":
        return False
    if len(inputs) != 1 or tree.entry(inputs[0]) != "file":
        what = f"{len(inputs)} inputs" if len(inputs) != 1 else f"the folder {inputs[0]}"
        raise HinetDeployError(f"-o {output} names a file, but {what} would go there: give a "
                               f"folder to -o (or one input file)")
    if kind_of(inputs[0]) != kind:
        raise HinetDeployError(f"-o {output} names {'an' if kind == IMAGE else 'a'} {kind} file "
                               f"but {inputs[0]} is {'an' if kind_of(inputs[0]) == IMAGE else 'a'} "
                               f"{kind_of(inputs[0])}")
    return True


def plan_jobs(inputs, output) -> Plan:
    """The plan for `inputs` (paths, or URIs) written under the folder `output` (a path or URI),
    or into the file `output` where it names one (output_is_file). A missing input and a plan that
    would lose data are usage errors (HinetDeployError)."""
    uris = any(is_uri(str(x)) for x in [*inputs, output])
    tree = _UriTree() if uris else _LocalTree()
    plan, out_key = Plan(), as_uri(output)
    if inputs and tree.entry(inputs[0]) is not None and output_is_file(inputs, output):
        plan.jobs.append(Job(tree.source(inputs[0]), output if uris else Path(output),
                             kind_of(inputs[0])))
        plan.into_file = True
        _check(plan)
        return plan
    for given in inputs:
        entry = tree.entry(given)
        if entry is None:
            raise HinetDeployError(f"input {given} does not exist")
        if entry == "folder":
            if as_uri(given) == out_key:
                raise HinetDeployError(f"-o {output} is the input folder {given}: the outputs "
                                       f"would replace the inputs; choose another folder")
            for source, relative in tree.files(given, out_key, plan):
                kind = kind_of(relative)
                if kind is None:
                    plan.ignored.append(source)
                else:
                    plan.jobs.append(Job(source, tree.join(output, relative), kind))
        elif entry != "file":
            plan.failed.append((given, f"is {entry}, not a regular file: left alone"))
        elif kind_of(given) is None:
            plan.failed.append((given, NOT_RESTORABLE))
        else:
            source = tree.source(given)
            plan.jobs.append(Job(source, tree.join(output, Path(str(given)).name), kind_of(given)))
    _check(plan)
    return plan


def _check(plan: Plan) -> None:
    """Keeps each job once; refuses an output onto its own input and two inputs onto one output.
    A file whose place cannot be resolved (a symbolic link loop) fails alone."""
    by_output: dict[str, tuple[str, object]] = {}
    kept, seen = [], set()
    for job in plan.jobs:
        try:
            source, output = as_uri(job.source), as_uri(job.output)
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            plan.failed.append((job.source, f"cannot resolve the path: {exc}"))
            continue
        if (source, output) in seen:
            continue  # the same file named twice (or given and inside a given folder)
        seen.add((source, output))
        if output == source:
            raise HinetDeployError(f"{job.source} would be overwritten by its own output: choose an "
                                   f"-o outside the input folders")
        other_key, other = by_output.setdefault(output, (source, job.source))
        if other_key != source:
            raise HinetDeployError(f"{other} and {job.source} would both be written to {job.output}")
        kept.append(job)
    plan.jobs = kept
