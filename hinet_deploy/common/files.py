"""Atomic file writes: a reader never sees a half-written ONNX graph, engine or image."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
import string
import tempfile
from pathlib import Path

from hinet_deploy.common.errors import DISK_FULL_ERRNOS, DiskFullError, HinetDeployError

# Where the commands write when told nowhere else: under the directory they run in, never inside
# the package, and not build/, which setuptools and pip use when they build a wheel here.
DEFAULT_OUTPUT_DIR = Path("hinet-out")
DEFAULT_OPENVINO_DIR = DEFAULT_OUTPUT_DIR / "openvino"  # OpenVINO INT8 models (build --openvino)
CACHE_ENV = "HINET_DEPLOY_CACHE"  # overrides where cache_dir() is


def cache_dir() -> Path:
    """The project's own cache folder, for what is reused across commands and is safe to delete:
    $HINET_DEPLOY_CACHE, else $XDG_CACHE_HOME/hinet-deploy, else ~/.cache/hinet-deploy."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hinet-deploy"


# Temporary names: `.<output name>.hinet-partial-<pid>-<token><suffix>`. The writer's pid tells a
# file left by a killed writer from one being written; the token's last 6 characters are a hash of
# the rest of the name, so a name the writer did not make (a user's `.clip.mp4.20231.notes`) never
# passes as ours and is never swept. The output name is shortened (by bytes) where the whole would
# pass the folder's name limit (NAME_MAX, 255 bytes on Linux file systems).
PARTIAL_TAG = "hinet-partial"
_PARTIAL = re.compile(rb"^\.(?P<stem>.*)\." + PARTIAL_TAG.encode()
                      + rb"-(?P<pid>[0-9]{1,10})-(?P<nonce>[a-z0-9]{8})(?P<check>[0-9a-f]{6})"
                      + rb"(?P<suffix>(?:\.[A-Za-z0-9]{1,16}){0,2})$", re.DOTALL)
_MAX_SUFFIX = 24  # bytes of the real suffix kept (".partial.mp4"): formats are picked by extension


def _check(stem: bytes, pid: bytes, nonce: bytes, suffix: bytes) -> bytes:
    return hashlib.blake2s(b"\0".join([stem, pid, nonce, suffix]), digest_size=3).hexdigest().encode()


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def partial_name(path: Path, suffix: str = ".tmp") -> str:
    """The temporary name of `path` for this process: a fresh token each call, within NAME_MAX."""
    suffix_bytes = os.fsencode(suffix)[:_MAX_SUFFIX]
    if not re.fullmatch(rb"(?:\.[A-Za-z0-9]{1,16}){0,2}", suffix_bytes):
        suffix_bytes = b".tmp"
    pid = str(os.getpid()).encode()
    nonce = "".join(secrets.choice(string.ascii_lowercase + string.digits)
                    for _ in range(8)).encode()
    fixed = 2 + len(PARTIAL_TAG) + 2 + len(pid) + 8 + 6 + len(suffix_bytes)
    stem = os.fsencode(path.name)[:max(1, _name_max(path.parent) - fixed)]
    name = (b"." + stem + b"." + PARTIAL_TAG.encode() + b"-" + pid + b"-" + nonce
            + _check(stem, pid, nonce, suffix_bytes) + suffix_bytes)
    return os.fsdecode(name)


def is_partial(name: str | bytes) -> int | None:
    """The writer's pid where `name` is a temporary name partial_name made, else None."""
    match = _PARTIAL.match(os.fsencode(name))
    if match is None:
        return None
    parts = match.group("stem", "pid", "nonce", "suffix")
    return int(match["pid"]) if _check(*parts) == match["check"] else None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yields a temporary path in the target's folder; renames it onto `path` only on success.
    `suffix` ends the temporary name (tools that pick a format by extension need the real one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    while True:
        tmp = path.parent / partial_name(path, suffix)
        try:  # O_EXCL: never onto anything that exists, as mkstemp; the mode open() would give
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~umask | 0o600))
            break
        except FileExistsError:
            continue
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Removes, in one pass over `folder`, the temporary files atomic_path left there in processes
    that are gone (killed with -9, a machine that lost power); returns them. Live writers' files
    stay, and so does every name atomic_path did not make, whatever it looks like."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        pid = is_partial(entry.name)
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
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


_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
            (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def special_kind(mode: int) -> str | None:
    """What a file of this st_mode is where it is neither a regular file nor a folder: reading
    one can block forever (a FIFO with no writer) or never end (/dev/zero)."""
    return next((name for test, name in _SPECIAL if test(mode)), None)


def not_regular(path: str | os.PathLike) -> str | None:
    """Why `path` (links followed) is no regular file to read, or None where it is one."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return "does not exist" if exc.errno == errno.ENOENT else f"cannot be read ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    kind = special_kind(mode)
    return None if kind is None else f"is {kind}, not a regular file: left alone"


def input_file(path: str | os.PathLike, what: str) -> Path:
    """`path` if it is a non-empty regular file, else one error that says what it is instead."""
    path = Path(path)
    problem = not_regular(path)
    if problem is not None:
        raise HinetDeployError(f"{what} {path} {problem}")
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
