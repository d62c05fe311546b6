"""Filesystem URIs (s3://, gs://, hdfs://, file://, ...) through pyarrow's filesystems, the ones Ray
Data itself reads and writes through. pyarrow comes with the `cluster` extra and is imported only
when a URI is used."""
from __future__ import annotations

from pathlib import Path

from hinet_deploy.common.errors import HinetDeployError


def is_uri(text) -> bool:
    return isinstance(text, str) and "://" in text


def as_uri(location) -> str:
    """A URI as given, or a local path as a file:// URI of its resolved form: one spelling per
    place, so two names of one file compare equal."""
    text = str(location)
    return text.rstrip("/") if is_uri(text) else Path(text).resolve().as_uri()


def filesystem(uri: str):
    """(pyarrow filesystem, path) of a URI."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise HinetDeployError(f"cannot open {uri}: {exc}") from exc


def exists(location) -> bool:
    if not is_uri(location):
        return Path(location).exists()
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def download(uri: str, path: Path) -> None:
    fs, source = filesystem(uri)
    with fs.open_input_stream(source) as stream:
        path.write_bytes(stream.read())


def upload(path: Path, uri: str) -> None:
    """Written under a hidden name, then moved onto the output: never a partial file under it."""
    fs, target = filesystem(uri)
    parent, name = target.rsplit("/", 1)
    fs.create_dir(parent, recursive=True)
    partial = f"{parent}/.{name}.partial"
    with fs.open_output_stream(partial) as stream:
        stream.write(path.read_bytes())
    fs.move(partial, target)
