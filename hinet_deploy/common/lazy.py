"""Optional heavy dependencies: one table of which extra brings each, one install line that works
for how this package was installed, and `require`, which imports a module or says what to install.

The package is on no index: `pip install 'hinet-deploy[export]'` cannot work for a user who
installed from a clone or a wheel, so the line names the clone folder or the wheel file they used.
"""
from __future__ import annotations

import importlib
import json
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from hinet_deploy.common.errors import HinetDeployError, first_line

DISTRIBUTION = "hinet-deploy"
# The top-level module each optional package installs -> the extra (pyproject.toml) that brings it.
EXTRA_OF = {"torch": "export", "onnx": "export", "onnx_graphsurgeon": "export",
            "skimage": "export", "matplotlib": "export", "onnxruntime": "onnxruntime",
            "tensorrt_rtx": "trt", "cuda": "trt", "av": "video", "ray": "cluster",
            "pyarrow": "cluster", "openvino": "openvino", "nncf": "nncf"}
# What an extra cannot bring on some platforms, said after the install line.
EXTRA_NOTES = {"gpu": "after `pip uninstall -y onnxruntime`: both builds install one module",
               "export": "on Jetson, torch comes from NVIDIA's own wheel for JetPack",
               "trt": "on Jetson, TensorRT and CUDA come with JetPack: use the `jetson` extra"}


def _installed_from() -> str | None:
    """Where pip installed this package from (PEP 610 direct_url.json): the clone's folder or the
    wheel's path; None when it came from an index or runs from a checkout on the path."""
    try:
        text = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    try:
        url = json.loads(text or "null")["url"]
    except (TypeError, KeyError, ValueError):
        return None
    parsed = urlparse(url)
    return unquote(parsed.path) if parsed.scheme == "file" else url


def _checkout() -> Path | None:
    """The clone this module runs from, if it runs from one."""
    root = Path(__file__).resolve().parents[2]
    project = root / "pyproject.toml"
    if project.is_file() and f'name = "{DISTRIBUTION}"' in project.read_text(errors="replace"):
        return root
    return None


def install_line(extra: str) -> str:
    """The pip command that adds `extra` to this installation."""
    source = _installed_from()
    if source is None:
        checkout = _checkout()
        source = None if checkout is None else str(checkout)
    if source is None:
        return f"pip install '{DISTRIBUTION}[{extra}]'"
    here = Path.cwd()
    path = Path(source)
    if path.is_absolute() and path.is_relative_to(here):
        source = "." if path == here else f"./{path.relative_to(here)}"
    return f"pip install '{source}[{extra}]'"


def install_hint(extra: str) -> str:
    """The install line, with what the extra cannot bring on some platforms."""
    note = EXTRA_NOTES.get(extra)
    return install_line(extra) + (f" ({note})" if note else "")


def extra_for(module: str, table: dict | None = None) -> str | None:
    """The extra that installs `module` (a dotted name), or None when no extra does; `table`: the
    whole optional-dependency table where a caller has it (runtime.backends adds its rows)."""
    return (table or EXTRA_OF).get(module.split(".")[0])


def missing_module_message(module: str, purpose: str, table: dict | None = None) -> str | None:
    """The one line for a missing optional module, or None for a module no extra brings."""
    extra = extra_for(module, table)
    if extra is None:
        return None
    return f"{purpose} needs {module}, which is not installed: {install_hint(extra)}"


def require(module: str, purpose: str, extra: str | None = None):
    """Imports `module` or raises HinetDeployError("Y needs X, which is not installed: pip ...").
    `extra` where the table's root module does not say it (cuda.bindings.nvrtc, say)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = extra or extra_for(module)
        how = install_hint(extra) if extra else f"pip install {module.split('.')[0]}"
        if isinstance(exc, ModuleNotFoundError) and exc.name and module.startswith(exc.name):
            why = "which is not installed"
        else:  # installed but broken (a missing shared library, say): its own words matter
            why = f"which does not load ({first_line(exc)})"
        raise HinetDeployError(f"{purpose} needs {exc.name or module}, {why}: {how}") from exc
