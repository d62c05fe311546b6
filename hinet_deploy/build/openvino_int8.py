"""`hinet-deploy build --int8 --openvino`: an INT8 model for OpenVINO on the CPU, written as
OpenVINO IR (.xml + .bin) with a sidecar the runtime reads (backend, precision, calibration, float
layers, graph hash, PSNR against FP32 on the held-out crops, OpenVINO and NNCF versions).

NNCF quantizes (build.nncf_model); the float layers (the default list, or a measured choice:
build.sensitivity with target `openvino`) are the same edit of its model that the measurement
makes, so what the sidecar records is what the shipped model does. The IR keeps every float weight
in FP32 (OpenVINO's save_model would halve them by default).
"""
from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path

from hinet_deploy.build.calibration import CalibOptions, calibration_images
from hinet_deploy.build.nncf_model import (FLOAT_OPS, LAYOUT, OVERFLOW_FIX, require_nncf,
                                            save_ir)
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.files import atomic_path, file_sha256
from hinet_deploy.common.lazy import require
from hinet_deploy.common.progress import say

def default_output(fp32: Path, out_dir: Path, tag: str) -> Path:
    stem = fp32.name.removesuffix(".onnx").removesuffix(".fp32")
    return Path(out_dir) / f"{stem}.openvino-int8{tag}.xml"


def build_openvino_int8(fp32: Path, calib: CalibOptions, output: Path | None, out_dir: Path,
                        float_tag, log=say) -> tuple[Path, dict]:
    """Quantizes `fp32` with NNCF, keeps the float layers (`calib.float_layers`, or measured ones
    with `calib.auto`), measures the result against FP32 on the held-out crops, and writes the IR
    and its sidecar (OUTPUT.xml.json). Returns the model's path and the sidecar's facts."""
    import onnx

    from hinet_deploy.build.sensitivity import Sensitivity
    from hinet_deploy.export.precision import float_nodes
    from hinet_deploy.engines.sidecar import sidecar_path

    nncf = require_nncf()
    ov = require("openvino", "writing OpenVINO models")
    started = datetime.datetime.now(datetime.timezone.utc)
    images = calibration_images(calib)
    measure = calib.auto.measure if calib.auto else None
    sensitivity = Sensitivity(fp32, calib, measure, log=log, calib_images=images,
                              target="openvino")
    chosen = {}
    if calib.auto is not None:
        choice = sensitivity.choose(calib.auto)
        log(choice.summary())
        layers = choice.layers
        chosen = {"float_choice": choice.facts()}
    else:
        float_nodes(sensitivity.runner().fp32_model, calib.float_layers)  # unknown names: refused
        layers = tuple(sensitivity.modules(calib.float_layers)) if calib.float_layers else ()
    mean, worst = sensitivity.psnr(layers)
    model = sensitivity.runner().switches.floated(layers)
    path = output or default_output(fp32, out_dir, float_tag(layers if calib.auto else
                                                             calib.float_layers))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_ir(model, path)
    facts = {
        "backend": "openvino", "precision": "int8", "format": "OpenVINO IR, quantized by NNCF",
        "onnx": str(fp32), "onnx_sha256": sensitivity.graph_sha256,
        "model_sha256": file_sha256(path), "weights_sha256": file_sha256(path.with_suffix(".bin")),
        "float_layers": list(layers), "graph_layout": LAYOUT, "float_ops": list(FLOAT_OPS),
        "overflow_fix": OVERFLOW_FIX,
        "calibration": {"quantizer": f"nncf {nncf.__version__} (defaults)",
                        "images": images.description, "crops": calib.count, "crop": calib.crop,
                        "mode": calib.mode},
        "measured_on": sensitivity.measure_images.description,
        "psnr_vs_fp32": mean, "worst_psnr_vs_fp32": worst,
        "measurement": {"crops": len(sensitivity.runner().crops), "crop": sensitivity.measure.crop,
                        "seed": sensitivity.measure.seed},
        "openvino": ov.__version__, "nncf": nncf.__version__, "onnx_version": onnx.__version__,
        "cpu": platform.processor() or platform.machine(),
        "created": started.isoformat(timespec="seconds"), **chosen}
    with atomic_path(sidecar_path(path)) as tmp:
        tmp.write_text(json.dumps(facts, indent=2) + "\n")
    return path, facts


def check_output(path: Path) -> None:
    """An OpenVINO INT8 model is IR: its name ends in .xml (the weights go beside it in .bin)."""
    if path.suffix.lower() != ".xml":
        raise HinetDeployError(f"an OpenVINO INT8 model is written as IR: {path.name} should end "
                               f"in .xml (its weights go beside it in .bin)")
