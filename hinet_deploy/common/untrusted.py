"""The policy for files the user did not write (sidecars, graphs with external data, checkpoints,
images and videos from elsewhere), in one place:

- a path read from such a file is confined to that file's own folder: no absolute paths, no `..`,
  no symbolic link that leads out (`confined`);
- a file named there is checked against the size and SHA-256 recorded beside it before it is used
  or shipped to another machine (`check_recorded`);
- JSON is read bounded in size and parsed with every failure one line (`read_json`), then
  checked field by field for its types before anything reads it (`checked_fields`);
- what a file declares it will cost is bounded before anything is allocated or decompressed:
  archives by their declared sizes (`check_archive`), images and videos by their pixels
  (`check_pixels`). The limits and how to raise them are in the messages.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path, PurePosixPath

from hinet_deploy.common.errors import HinetDeployError, first_line
from hinet_deploy.common.files import file_sha256, not_regular

MAX_PIXELS_ENV = "HINET_DEPLOY_MAX_PIXELS"
MAX_ARCHIVE_ENV = "HINET_DEPLOY_MAX_CHECKPOINT_MB"
# Restoring an image needs about 64 bytes a pixel beside its file (the decoded pixels, the network's
# float input and output, blend weights: measured with the demo model in blend mode); a quarter of
# the memory available is allowed to one image by default.
BYTES_PER_PIXEL = 64
PIXEL_SHARE = 0.25
# torch.save writes archive members stored, not compressed; an official 88.7 M-parameter
# checkpoint unpacks to its own size. A member that unpacks to over 100 times its size is a bomb.
MAX_COMPRESSION_RATIO = 100
ARCHIVE_SHARE = 0.5  # of the memory available, for a checkpoint's declared contents


def confined(folder: Path, relative, what: str) -> Path:
    """`folder / relative`, refused unless it stays inside `folder` (symbolic links resolved)."""
    text = str(relative)
    if "\0" in text:
        raise HinetDeployError(f"{what} names {text!r}, which holds a NUL byte: no file has such "
                               f"a name; refused")
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if not text or os.path.isabs(text) or text.startswith(("/", "\\")) or ".." in parts:
        raise HinetDeployError(f"{what} names {text!r}, outside its own folder {folder}: refused "
                               f"(paths in it must be relative, inside that folder)")
    path = Path(folder) / text
    try:
        inside = path.resolve().is_relative_to(Path(folder).resolve())
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise HinetDeployError(f"{what} names {text!r}, which cannot be resolved: {exc}") from exc
    if not inside:
        raise HinetDeployError(f"{what} names {text!r}, which leads out of {folder} through a "
                               f"symbolic link: refused")
    return path


# The largest JSON file from elsewhere read (sidecars are a few kB; a 300 MB one is an attack).
MAX_JSON_BYTES = 4 * 2**20


def read_json(path: Path, what: str, limit: int = MAX_JSON_BYTES):
    """The JSON value in `path`, read only if it is a regular file of at most `limit` bytes; any
    way it can be malformed (bad UTF-8 or syntax, nesting too deep for the parser, integers with
    more digits than Python converts) is one HinetDeployError naming the file."""
    problem = not_regular(path)
    if problem is not None:
        raise HinetDeployError(f"{what} {path} {problem}")
    size = Path(path).stat().st_size
    if size > limit:
        raise HinetDeployError(f"{what} {path} is {size / 2**20:.1f} MB, over the {limit / 2**20:.0f}"
                               f" MB such a file can be: refused unread")
    try:
        with open(path, "rb") as f:
            text = f.read(limit + 1).decode("utf-8")
        return json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: JSONDecodeError, and ints past sys.get_int_max_str_digits()
        why = "nested too deeply" if isinstance(exc, RecursionError) else first_line(exc)
        raise HinetDeployError(f"{what} {path} is not valid JSON ({why})") from None


def check_recorded(path: Path, what: str, size: int | None = None,
                   sha256: str | None = None) -> None:
    """The file is the one recorded: its size, then its hash (where they were recorded)."""
    problem = not_regular(path)
    if problem is not None:
        raise HinetDeployError(f"{what} {path} {problem}")
    actual = Path(path).stat().st_size
    if size is not None and actual != size:
        raise HinetDeployError(f"{what} {path} has {actual} bytes, not the {size} recorded: it is "
                               f"not the file that was built; rebuild it")
    if sha256 is not None and file_sha256(path) != sha256:
        raise HinetDeployError(f"{what} {path} does not match the SHA-256 recorded beside it: it "
                               f"changed since the build; rebuild it")


def _type_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def checked_fields(data, fields: dict, where: str) -> dict:
    """`data` when it is an object whose listed fields have the listed types (a tuple: any of
    them); one line naming the first that does not."""
    if not isinstance(data, dict):
        raise HinetDeployError(f"{where} does not hold a JSON object")
    for name, kind in fields.items():
        if name not in data:
            continue
        value = data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:  # JSON true is not a number here
            ok = False
        else:
            ok = isinstance(value, kinds)
        if not ok:
            raise HinetDeployError(f"{where}: {name} is {json_type(value)} {value!r:.40}, not "
                                   f"{_type_name(kind)}")
    return data


def json_type(value) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object", type(None): "null"}.get(type(value), "a value")


def _available() -> int | None:
    from hinet_deploy.common.memory import available_bytes

    return available_bytes()


def _env_limit(name: str, scale: float) -> float | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return float(value) * scale
    except ValueError:
        raise HinetDeployError(f"{name}={value!r} is not a number") from None


def max_pixels() -> int:
    """The most pixels one image or video frame may have: $HINET_DEPLOY_MAX_PIXELS, else sized to
    the memory available (a quarter of it at BYTES_PER_PIXEL); 100 MP where that is unknown."""
    given = _env_limit(MAX_PIXELS_ENV, 1)
    if given is not None:
        return int(given)
    available = _available()
    return int(available * PIXEL_SHARE / BYTES_PER_PIXEL) if available else 100_000_000


def check_pixels(width: int, height: int, what: str, limit: int | None = None) -> None:
    """Refuses, before its pixels are allocated, an image larger than the limit."""
    limit = max_pixels() if limit is None else limit
    if width * height > limit:
        raise HinetDeployError(
            f"{what} is {width}x{height} ({width * height / 1e6:.1f} MP), over the limit of "
            f"{limit / 1e6:.1f} MP sized to this machine's memory: raise it with "
            f"{MAX_PIXELS_ENV}=<pixels> (or --max-megapixels), or give a smaller image")


def check_archive(path: Path, what: str = "checkpoint") -> None:
    """A zip archive (what torch.save writes) whose members declare more than the limit, or
    unpack to over MAX_COMPRESSION_RATIO times their stored size, is refused before anything is
    decompressed. Other files are left to their reader."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise HinetDeployError(f"cannot read {what} {path}: a damaged archive ({exc})") from exc
    declared = sum(m.file_size for m in members)
    limit = _env_limit(MAX_ARCHIVE_ENV, 2**20)
    if limit is None:
        available = _available()
        limit = available * ARCHIVE_SHARE if available else 16 * 2**30
    raise_hint = f"raise the limit with {MAX_ARCHIVE_ENV}=<MB> if the file is trusted"
    if declared > limit:
        raise HinetDeployError(f"{what} {path} declares {declared / 2**20:.0f} MB of contents, "
                               f"over the limit of {limit / 2**20:.0f} MB: refused before "
                               f"unpacking; {raise_hint}")
    if os.environ.get(MAX_ARCHIVE_ENV):
        return  # the user vouches for the file
    for member in members:
        if member.file_size > MAX_COMPRESSION_RATIO * max(member.compress_size, 1) and \
                member.file_size > 2**20:
            raise HinetDeployError(
                f"{what} {path}: {member.filename} unpacks to {member.file_size / 2**20:.0f} MB "
                f"from {member.compress_size / 2**10:.0f} kB (over {MAX_COMPRESSION_RATIO} times): "
                f"refused as a decompression bomb before unpacking; {raise_hint}")
