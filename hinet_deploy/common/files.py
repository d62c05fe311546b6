"""Atomic file writes: a reader never sees a half-written ONNX graph, engine or image."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import tempfile
from pathlib import Path

from hinet_deploy.common.errors import DISK_FULL_ERRNOS, DiskFullError, HinetDeployError

# Where the commands write when told nowhere else: under the directory they run in, never inside
# the package, and not build/, which setuptools and pip use when they build a wheel here.
DEFAULT_OUTPUT_DIR = Path("hinet-out")
CACHE_ENV = "HINET_DEPLOY_CACHE"  # overrides where cache_dir() is


def cache_dir() -> Path:
    """The project's own cache folder, for what is reused across commands and is safe to delete:
    $HINET_DEPLOY_CACHE, else $XDG_CACHE_HOME/hinet-deploy, else ~/.cache/hinet-deploy."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hinet-deploy"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yields a temporary path in the target's folder; renames it onto `path` only on success.
    `suffix` ends the temporary name (tools that pick a format by extension need the real one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's process id in the name: a file left by a killed writer is told apart from one
    # being written (remove_stale_partials).
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix,
                               dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode open() would
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Removes the temporary files atomic_path left beside `path` in processes that are gone
    (killed with -9, a machine that lost power); returns them. Live writers' files stay."""
    path = Path(path)
    removed = []
    for partial in path.parent.glob(f".{glob.escape(path.name)}.*"):
        pid = partial.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            partial.unlink(missing_ok=True)
            removed.append(partial)
        except PermissionError:  # alive, another user's
            pass
    return removed


def write_whole(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` and proves it is on the disk: every byte written, flushed and synced,
    and the file's size on disk equal to len(data). A full disk is a DiskFullError naming it."""
    try:
        with open(path, "wb") as f:
            view = memoryview(data)
            while view:
                view = view[f.write(view):]
            f.flush()
            os.fsync(f.fileno())
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise DiskFullError(f"the disk of {Path(path).parent} is full ({exc.strerror}): "
                                f"{Path(path).name} could not be written") from exc
        raise
    if size != len(data):
        raise DiskFullError(f"{Path(path).name}: {size} of {len(data)} bytes reached the disk of "
                            f"{Path(path).parent}")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MB chunks (engines and graphs are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def input_file(path: str | os.PathLike, what: str) -> Path:
    """`path` if it is a non-empty file, else one error that says which of the three it is not."""
    path = Path(path)
    if path.is_dir():
        raise HinetDeployError(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise HinetDeployError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise HinetDeployError(f"{what} {path} is empty (0 bytes)")
    return path


def writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Makes `path` (and its parents) and proves a file can be created in it, before any long work:
    a read-only or full disk is one error line up front, not a traceback at the end."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HinetDeployError(f"{what} {path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".hinet-deploy-write-test."):
            pass
    except OSError as exc:
        raise HinetDeployError(f"cannot write into {what} {path}: {exc.strerror or exc}") from exc
    return path


def output_file(path: str | os.PathLike, flag: str = "-o") -> Path:
    """A file the command will write: not a directory, in a folder that can be written."""
    path = Path(path)
    if path.is_dir():
        raise HinetDeployError(f"{flag} {path} is a directory; give the file to write")
    writable_dir(path.parent, f"the folder of {flag} {path}")
    return path
