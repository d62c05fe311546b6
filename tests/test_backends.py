"""The backend table: a model file's default backend, an explicit choice, and that adding a backend
is one class plus one row (a small test backend here)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from conftest import REPO
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.lazy import EXTRA_OF
from hinet_deploy.common.limits import SizeLimits
from hinet_deploy.runtime import Restorer
from hinet_deploy.runtime import backends
from hinet_deploy.runtime.backends.base import option
from hinet_deploy.runtime.backends import (BACKENDS, BackendBase, OnnxRuntimeBackend,
                                           TorchBackend, backend_class, open_backend)


@dataclass(frozen=True)
class GainOptions:
    threads: int | None = option(None, "CPU threads", threads=True)
    padding: str = option("none", "how tiles are padded", tiled="tiled")


class GainBackend(BackendBase):
    """A whole backend: a `.gain` file holds one number the image is multiplied by."""

    name = "gain"
    suffixes = (".gain", ".onnx")  # also runs .onnx files, so it is never their default
    extra = "onnxruntime"
    Options = GainOptions
    opened = []

    def __init__(self, path, threads: int | None = None, padding: str = "none"):
        self.gain = 0.5 if path.suffix == ".onnx" else float(path.read_text())
        self.limits = SizeLimits(multiple=4)
        GainBackend.opened.append({"threads": threads, "padding": padding})

    def run_impl(self, batch: np.ndarray) -> np.ndarray:
        return batch * np.float32(self.gain)


@pytest.fixture
def gain_row(monkeypatch):
    """The one row that adds the backend."""
    monkeypatch.setitem(BACKENDS, GainBackend.name, GainBackend)
    GainBackend.opened.clear()
    return GainBackend


def test_a_new_backend_is_one_class_and_one_row(gain_row, tmp_path):
    model = tmp_path / "half.gain"
    model.write_text("0.5")
    image = np.full((37, 53, 3), 200, np.uint8)
    assert backend_class(model) is GainBackend  # its own suffix: the default
    with Restorer(model, mode="whole") as restorer:
        np.testing.assert_array_equal(restorer(image), np.full_like(image, 100))
    with Restorer(model) as restorer:  # blend: tiled, so its tiling defaults apply
        np.testing.assert_array_equal(restorer(image), np.full_like(image, 100))
    with Restorer(model, padding="mine"):  # the caller's option wins over the tiling default
        pass
    assert [o["padding"] for o in GainBackend.opened] == ["none", "tiled", "mine"]
    assert gain_row.worker_options(3) == {"threads": 3}
    assert gain_row.model_files(model) == [model]


def test_a_suffix_keeps_its_first_backend_and_others_are_chosen_by_name(gain_row, small_onnx):
    assert backend_class(small_onnx) is OnnxRuntimeBackend  # the first row that opens .onnx
    assert isinstance(open_backend(small_onnx), OnnxRuntimeBackend)
    chosen = open_backend(small_onnx, "gain")
    assert isinstance(chosen, GainBackend) and chosen.gain == 0.5


def test_a_backend_that_cannot_open_the_file_or_does_not_exist_is_refused(small_onnx):
    with pytest.raises(HinetDeployError, match="the pytorch backend runs .pth, .pt files"):
        open_backend(small_onnx, "pytorch")
    with pytest.raises(HinetDeployError, match="unknown backend 'tflite'; choose onnxruntime, "
                                               "pytorch, tensorrt, openvino, onnxruntime-gpu"):
        Restorer(small_onnx, backend="tflite")


def test_the_onnxruntime_arena_rule_lives_in_its_backend(small_onnx):
    """Tiled modes turn ONNX Runtime's memory arena off (a lower peak); whole images keep it."""
    assert OnnxRuntimeBackend.tiled_defaults() == {"memory_arena": False}
    assert TorchBackend.tiled_defaults() == {}
    tiled = open_backend(small_onnx, tiled=True).session.get_session_options()
    whole = open_backend(small_onnx).session.get_session_options()
    assert tiled.enable_cpu_mem_arena is False and whole.enable_cpu_mem_arena is True


def test_one_name_per_backend():
    assert list(backends.BACKENDS) == ["onnxruntime", "pytorch", "tensorrt", "openvino",
                                       "onnxruntime-gpu"]
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert all(cls.name == name and cls.suffixes and cls.extra in extras
               for name, cls in BACKENDS.items())
    assert set(EXTRA_OF.values()) <= set(extras)


def test_a_new_backend_row_is_a_contender_of_every_check(gain_row, tmp_path, monkeypatch):
    """One row and its check_runs: validate, bench and fidelity compare it with no other edit."""
    from hinet_deploy.build.flow import GraphRequest
    from hinet_deploy.checks import contenders as module

    graph = tmp_path / "m.onnx"
    graph.write_text("stand-in")
    monkeypatch.setattr(module, "precision_graphs", lambda req, precisions: [("fp32", graph)])
    monkeypatch.setattr(GainBackend, "check_runs", classmethod(
        lambda cls, models: [("half", models.graphs["fp32"], (("padding", "x"),))]), raising=False)
    found = module.contenders(tmp_path / "m.pth", GraphRequest(out_dir=tmp_path))
    assert found[0].key == module.BASELINE
    mine = [c for c in found if c.backend == "gain"]
    assert [(c.name, c.model, c.options) for c in mine] == [("gain:half", graph,
                                                             (("padding", "x"),))]
    from hinet_deploy.checks.claims import backend_names, graph_contenders

    assert "gain:half" in backend_names()  # claims runs both networks' graphs on it too
    assert graph_contenders(graph)["gain:half"] == (GainBackend, {"padding": "x"})


def test_each_backends_options_are_its_keywords():
    """The Options dataclass is the one statement of what a backend takes: its __init__ keywords
    are its fields, with the same defaults."""
    import dataclasses
    import inspect

    for cls in [*BACKENDS.values(), GainBackend]:
        params = list(inspect.signature(cls.__init__).parameters.values())[2:]
        fields = dataclasses.fields(cls.Options)
        assert [(p.name, p.default) for p in params] == [(f.name, f.default) for f in fields], cls


def test_a_new_backend_row_reaches_the_cli_ray_and_the_dependency_table(gain_row):
    """The same one row: `restore --help` offers its options naming it, a Ray worker holds it to
    its threads, and the optional-dependency table knows what it imports."""
    from hinet_deploy.cli import build_parser
    from hinet_deploy.runtime.backends import optional_dependencies

    parser = build_parser()
    restore = next(a for a in parser._subparsers._group_actions[0].choices.items()
                   if a[0] == "restore")[1]
    text = " ".join(restore.format_help().split())
    assert "--padding PADDING how tiles are padded (gain)" in text
    assert "--threads THREADS CPU threads (default: all) (onnxruntime, openvino, gain)" in text
    args = parser.parse_args(["restore", "x.png", "-o", "out", "--model", "m.gain",
                              "--padding", "mirror"])
    from hinet_deploy.cli.restore import backend_options

    assert backend_options(args) == {"padding": "mirror"}
    assert gain_row.worker_options(2) == {"threads": 2}
    GainBackend.requires = ("gainlib",)
    try:
        assert optional_dependencies()["gainlib"] == "onnxruntime"
    finally:
        GainBackend.requires = ()
