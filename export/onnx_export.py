"""PyTorch HINet -> ONNX, verified against PyTorch with ONNX Runtime before anything is written.

The graph's input is `input` (N,3,H,W float32 in [0,1]) and its output `output` (the stage-2
restoration; with both_stages also `output_stage1`). Batch, height and width are dynamic unless a
fixed shape is asked for. Facts callers need (size multiple, config, official tiling) travel in the
graph's metadata_props under `hinet.*`, so the runtime never re-derives them.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from hinet_deploy.export.checkpoint import LoadedModel
from hinet_deploy.export.model import RestorationOutput
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.progress import say
from hinet_deploy.common.files import atomic_path, file_sha256
from hinet_deploy.export.metadata import INPUT_NAME, OUTPUT_NAME, STAGE1_OUTPUT_NAME, write_metadata

DEFAULT_OPSET = 17  # chunk exports as two Slice nodes, the pattern hin_fusion folds; TensorRT 10 parses it
OPSETS = range(11, 23)  # every opset from 11 to 22 exports and verifies (measured with torch 2.13)
# A quarter of one 8-bit level (1/255): an export within it cannot move an 8-bit output by more than
# one level. Measured FP32 differences are around 1e-6 for wf=8-64 (tests print them).
VERIFY_MAX_ABS = 1e-3
# Two different batches and shapes, so a graph whose "dynamic" axes were baked in fails verification.
DEFAULT_VERIFY_SHAPES = ((1, 64, 64), (2, 48, 80))
TRACE_SHAPE = (1, 64, 64)


@dataclass
class ExportReport:
    path: Path
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # "NxHxW" -> max |ORT - PyTorch|
    tolerance: float = VERIFY_MAX_ABS

    def summary(self) -> str:
        diffs = ", ".join(f"{shape}: {d:.2e}" for shape, d in self.max_abs_diff.items())
        return f"verified {self.path} against PyTorch (max abs diff {diffs}; tolerance {self.tolerance:g})"


def _check_shape(shape, multiple: int) -> tuple[int, int, int]:
    n, h, w = (int(v) for v in shape)
    if n < 1 or h % multiple or w % multiple or h <= 0 or w <= 0:
        raise HinetDeployError(f"shape {n}x{h}x{w}: height and width must be positive multiples of "
                               f"{multiple} and the batch at least 1")
    return n, h, w


def _metadata(loaded: LoadedModel, sha256: str, both_stages: bool,
              dynamic: bool) -> dict[str, str]:
    return {
        "dynamic": "true" if dynamic else "false",  # batch, height and width
        "config": json.dumps(loaded.config.as_dict()),
        "variant": "/".join(loaded.official_names) or "custom",
        "size_multiple": str(loaded.size_multiple),
        "official_tiling": loaded.official_tiling,
        "checkpoint_sha256": sha256,
        "outputs": "stage1,stage2" if both_stages else "stage2",
    }


def _trace_to_onnx(wrapper, path: Path, shape, opset: int, dynamic: bool, both_stages: bool):
    outputs = [STAGE1_OUTPUT_NAME, OUTPUT_NAME] if both_stages else [OUTPUT_NAME]
    axes = {0: "batch", 2: "height", 3: "width"}
    dynamic_axes = {name: axes for name in [INPUT_NAME, *outputs]} if dynamic else None
    with warnings.catch_warnings():
        # The exporter warns that instance norm follows training mode; the net is in eval mode and
        # InstanceNorm uses per-input statistics either way (no running stats).
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(wrapper, (torch.rand(*_nchw(shape)),), str(path), dynamo=False,
                              opset_version=opset, input_names=[INPUT_NAME], output_names=outputs,
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
        except Exception as exc:  # the exporter raises many types; all mean "cannot export this"
            raise HinetDeployError(f"ONNX export failed at opset {opset}: {exc}") from exc


def _nchw(shape) -> tuple[int, int, int, int]:
    n, h, w = shape
    return n, 3, h, w


def verify_against_torch(onnx_path: Path, wrapper, shapes, tolerance: float, seed: int = 0):
    """Max |ORT - PyTorch| over all outputs for each shape; raises if any exceeds the tolerance."""
    import onnxruntime as ort

    if not shapes:
        return {}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    diffs = {}
    for shape in shapes:
        x = torch.rand(*_nchw(shape), generator=gen)
        with torch.no_grad():
            expected = wrapper(x)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(None, {INPUT_NAME: x.numpy()})
        key = "x".join(map(str, shape))
        diffs[key] = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
        if not diffs[key] <= tolerance:  # also catches NaN
            raise HinetDeployError(
                f"ONNX Runtime output differs from PyTorch by {diffs[key]:.3g} at {key} "
                f"(tolerance {tolerance:g}); the graph was not written")
    return diffs


def export_onnx(loaded: LoadedModel, out_path, *, opset: int = DEFAULT_OPSET,
                both_stages: bool = False, fixed_shape=None, verify_shapes=None,
                tolerance: float = VERIFY_MAX_ABS, log=None) -> ExportReport:
    """Exports, checks and verifies; writes `out_path` only if every check passed."""
    log = log or say
    if opset not in OPSETS:
        raise HinetDeployError(f"opset {opset} is not supported: choose {OPSETS.start} to "
                               f"{OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    out_path = Path(out_path)
    multiple = loaded.size_multiple
    trace_shape = _check_shape(fixed_shape or TRACE_SHAPE, multiple)
    if verify_shapes is None:
        verify_shapes = [trace_shape] if fixed_shape else DEFAULT_VERIFY_SHAPES
    verify_shapes = [_check_shape(s, multiple) for s in verify_shapes]
    wrapper = RestorationOutput(loaded.net, both_stages).eval()
    report = ExportReport(out_path, tolerance=tolerance)
    with atomic_path(out_path) as tmp:
        log(f"exporting {loaded.describe()} to ONNX (opset {opset}, "
            f"{'fixed ' + 'x'.join(map(str, trace_shape)) if fixed_shape else 'dynamic N/H/W'})")
        _trace_to_onnx(wrapper, tmp, trace_shape, opset, not fixed_shape, both_stages)
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model, full_check=True)
        sha = file_sha256(loaded.path) if loaded.path else "random weights"
        write_metadata(model, _metadata(loaded, sha, both_stages, fixed_shape is None))
        onnx.save(model, str(tmp))
        log(f"verifying with ONNX Runtime at {', '.join('x'.join(map(str, s)) for s in verify_shapes)}")
        report.max_abs_diff = verify_against_torch(tmp, wrapper, verify_shapes, tolerance)
    return report
