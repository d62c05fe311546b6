"""The cure for TensorRT-RTX 1.7's abort on plugin nodes, applied without touching what other
programs load.

When its ONNX parser imports a plugin node, `libtensorrt_onnxparser_rtx.so.1` dlopen()s the
unversioned name `libtensorrt_rtx.so`. The PyPI wheel (`tensorrt_rtx_cu13_libs` 1.7.1.116) ships
only `libtensorrt_rtx.so.1`, the dlopen fails inside a function-local static initialiser, and the
parser calls std::terminate (seen with strace; `tests/test_engines.py` re-checks both halves). The
dynamic loader looks for that name beside the parser (its `$ORIGIN`), in the folders of
LD_LIBRARY_PATH as it was when the process started, and in the system's folders; a library
already loaded under its versioned name does not match, so preloading it does not help.

So: where the name is already found, nothing is needed. Otherwise a link `libtensorrt_rtx.so ->
<wheel>/libtensorrt_rtx.so.1` is made in a folder of the project's own cache, and the parse and
build run in a child process whose LD_LIBRARY_PATH starts with that folder. The wheel's folder and
this process are left as they are.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from hinet_deploy.common.files import cache_dir

UNVERSIONED = "libtensorrt_rtx.so"
VERSIONED = "libtensorrt_rtx.so.1"
LIBS_PACKAGE = "tensorrt_rtx_libs"  # the wheel's folder of shared libraries


@dataclass(frozen=True)
class ParserFix:
    """How a build that holds plugin nodes is run: `env` None in this process, else in a child
    process with these environment variables; `how` says what was done, for the sidecar."""

    how: str
    env: dict[str, str] | None = field(default=None, compare=False)


def wheel_libraries() -> Path | None:
    """The folder of TensorRT-RTX's libraries installed from its wheel, or None."""
    spec = importlib.util.find_spec(LIBS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _found_at_start(folders) -> Path | None:
    """The first folder (of the parser's own and LD_LIBRARY_PATH's) holding the unversioned name."""
    for folder in folders:
        if folder and (Path(folder) / UNVERSIONED).exists():
            return Path(folder)
    return None


def _link_folder(libraries: Path) -> Path:
    """A folder of the cache with the link, one per wheel folder (made again if it went stale)."""
    digest = hashlib.sha256(str(libraries.resolve()).encode()).hexdigest()[:12]
    folder = cache_dir() / f"tensorrt_rtx-libs-{digest}"
    target = libraries.resolve() / VERSIONED
    link = folder / UNVERSIONED
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{UNVERSIONED}.{os.getpid()}"
    partial.unlink(missing_ok=True)
    partial.symlink_to(target)
    os.replace(partial, link)  # atomic: a concurrent build sees the old link or the new one
    return folder


def parser_fix() -> ParserFix:
    """What a TensorRT-RTX build of a graph with plugin nodes needs; raises OSError or
    FileNotFoundError (with the reason) where no cure can be applied."""
    libraries = wheel_libraries()
    start_path = os.environ.get("LD_LIBRARY_PATH", "")
    found = _found_at_start([libraries, *start_path.split(os.pathsep)])
    if found is not None:
        return ParserFix(f"none needed: {UNVERSIONED} is in {found}")
    if libraries is None or not (libraries / VERSIONED).is_file():
        raise FileNotFoundError(f"{VERSIONED} of TensorRT-RTX's wheel ({LIBS_PACKAGE}) is not "
                                f"installed, and no {UNVERSIONED} is on LD_LIBRARY_PATH")
    folder = _link_folder(libraries)
    env = {"LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(folder), start_path]))}
    return ParserFix(f"parsed and built in a child process with {folder} (a link {UNVERSIONED} -> "
                     f"{libraries / VERSIONED}) first on LD_LIBRARY_PATH", env)
