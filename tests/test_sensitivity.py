"""Measured precision: one calibration, float switches on the calibrated Q/DQ graph, the greedy
choice, held-apart image sets, and the commands that use them; all in ONNX Runtime on the CPU."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from hinet_deploy.build import sensitivity as sensitivity_module
from hinet_deploy.build.calibration import (AutoFloat, CalibOptions, MeasureOptions,
                                            calibration_cache, calibration_reader)
from hinet_deploy.build.sensitivity import Sensitivity
from hinet_deploy.calib.photos import HELD_OUT, TRAIN, load_photo
from hinet_deploy.cli import main
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.files import file_sha256
from hinet_deploy.export import precision
from hinet_deploy.export.precision import FloatSwitches, to_int8


@pytest.fixture
def calib(tmp_path):
    return CalibOptions(count=4, crop=64, cache_dir=tmp_path / "cache")


MEASURE = MeasureOptions(count=2, crop=64)


def _run(model_or_path, x):
    import onnxruntime as ort

    source = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) \
        else str(model_or_path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _quantize_calls(monkeypatch) -> list:
    """Every run of onnxruntime's quantizer from here on (the real one, counted)."""
    calls = []
    real = precision._quantize

    def counted(src, dst, reader, method, cache_path, cache_hit):
        calls.append(cache_hit)
        return real(src, dst, reader, method, cache_path, cache_hit)

    monkeypatch.setattr(precision, "_quantize", counted)
    return calls


def test_a_switched_layer_is_what_onnxruntime_makes_of_it_excluded(small_onnx, calib, tmp_path):
    """A layer whose input and output no other conv reads: in float by the switch, the output is
    the one of onnxruntime's own `nodes_to_exclude` on the same ranges."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    reader, fingerprint = calibration_reader(calib)
    cache = calibration_cache(calib, file_sha256(small_onnx), fingerprint)
    all_int8 = tmp_path / "all.onnx"
    to_int8(small_onnx, all_int8, reader, float_layers=(), cache_path=cache)
    switches = FloatSwitches(onnx.load(str(all_int8)), onnx.load(str(small_onnx)))
    consumers = {}
    for node in switches.model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    convs = {node.name for node in switches.nodes.values()}
    alone = next(layer for layer, node in switches.nodes.items()
                 if len(consumers[node.input[0]]) == 1 and layer != "conv_01"
                 and not _conv_reads(switches.model, node.output[0], convs))
    excluded = tmp_path / "excluded.onnx"
    quantize_static(str(small_onnx), str(excluded), None, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv", "ConvTranspose"], per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=[switches.nodes[alone].name],
                    calibrate_method=CalibrationMethod.Percentile,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                   "QuantizeBias": False}, calibration_cache_path=str(cache))
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    base = _run(all_int8, x)
    with switches.floated([alone]) as model:
        switched = _run(model, x)
    assert np.array_equal(switched, _run(excluded, x))
    assert not np.array_equal(switched, base)  # the switch changed something
    assert np.array_equal(_run(switches.model, x), base)  # and was undone


def _conv_reads(model, name: str, convs: set) -> bool:
    """Whether a conv reads `name`, directly or through Q/DQ and ops that are not convs."""
    seen, todo = set(), [name]
    while todo:
        tensor = todo.pop()
        for node in model.graph.node:
            if tensor in node.input and node.name not in seen:
                seen.add(node.name)
                if node.name in convs:
                    return True
                if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                    todo += list(node.output)
    return False


def test_ranking_from_one_calibration_is_the_built_graphs(small_onnx, calib, tmp_path, monkeypatch):
    calls = _quantize_calls(monkeypatch)
    sens = Sensitivity(small_onnx, calib, MEASURE, log=lambda m: None)
    report = sens.report()
    assert calls == [False]  # one calibration for every layer
    convs = [n for n in onnx.load(str(small_onnx)).graph.node if n.op_type in precision.QUANTIZED_OPS]
    assert len(report.layers) == len(convs)  # every convolution measured
    assert [c.gain for c in report.layers] == sorted((c.gain for c in report.layers), reverse=True)
    assert all(c.macs > 0 for c in report.layers)
    assert sum(c.macs for c in report.layers) == report.total_macs
    # The number measured for a layer is the PSNR of the graph a build writes with it in float.
    layer = report.layers[0]
    reader, fingerprint = calibration_reader(calib)
    built = tmp_path / "built.onnx"
    to_int8(small_onnx, built, reader, float_layers=(layer.layer,),
            cache_path=calibration_cache(calib, file_sha256(small_onnx), fingerprint))
    runner = sens.runner()
    backend = runner.session(onnx.load(str(built)))  # the ONNX Runtime backend, in memory
    values = []
    for crop in runner.crops:
        out = np.clip(backend.run(crop[None]), 0, 1).astype(np.float64)
        mse = np.mean((out - runner.reference(crop)) ** 2)
        values.append(10 * np.log10(1 / mse))
    assert np.mean(values) == pytest.approx(layer.psnr, abs=1e-6)


def test_a_second_measurement_reuses_the_first(small_onnx, calib, monkeypatch):
    first = Sensitivity(small_onnx, calib, MEASURE, log=lambda m: None)
    report = first.report()
    first.choose(AutoFloat(target_db=report.int8_psnr + 0.5))
    made = []
    monkeypatch.setattr(sensitivity_module, "_Runner",
                        lambda *a, **k: made.append(a) or pytest.fail("measured again"))
    again = Sensitivity(small_onnx, calib, MEASURE, log=lambda m: None)
    assert again.report().layers == report.layers
    again.choose(AutoFloat(target_db=report.int8_psnr + 0.5))
    assert made == []


def test_the_target_stops_the_greedy_choice(small_onnx, calib):
    sens = Sensitivity(small_onnx, calib, MEASURE, log=lambda m: None)
    report = sens.report()
    best = report.layers[0]
    assert best.gain > 0
    target = report.int8_psnr + best.gain / 2  # reachable with one layer
    choice = sens.choose(AutoFloat(target_db=target))
    assert choice.reached and choice.psnr >= target
    before_last = choice.steps[-2][1] if len(choice.steps) > 1 else report.int8_psnr
    assert before_last < target  # it stopped as soon as the target was met
    assert sens.psnr(choice.layers)[0] == choice.psnr
    nothing = sens.choose(AutoFloat(target_db=report.int8_psnr - 1))
    assert nothing.layers == () and nothing.reached
    budget = 1.5 * min(c.macs for c in report.layers if c.gain > 0) / report.total_macs
    capped = sens.choose(AutoFloat(target_db=99.0, macs_budget=budget))
    assert not capped.reached and capped.float_macs <= budget * report.total_macs
    assert len(capped.layers) >= 1


def test_measurement_and_calibration_images_never_overlap(small_onnx, calib, tmp_path):
    from PIL import Image

    sens = Sensitivity(small_onnx, calib, MEASURE, log=lambda m: None)
    assert set(sens.calib_images.images) == set(TRAIN)
    assert set(sens.measure_images.images) == set(HELD_OUT)
    assert not set(sens.calib_images.source_hashes.values()) & \
        set(sens.measure_images.source_hashes.values())
    facts = sens.report()
    assert facts.calibration["names"] == sorted(TRAIN)
    assert facts.measurement["names"] == sorted(HELD_OUT)
    # A measurement folder holding a calibration photograph, under another name, is refused.
    folder = tmp_path / "measure"
    folder.mkdir()
    Image.fromarray(load_photo("coffee")).save(folder / "a.png")
    Image.fromarray(load_photo(TRAIN[2])).save(folder / "renamed.png")
    with pytest.raises(HinetDeployError, match="also calibration images: renamed.png"):
        Sensitivity(small_onnx, calib, MeasureOptions(folder=folder, count=2, crop=64))
    # And so is one folder for both.
    same = CalibOptions(folder=folder, count=2, crop=64, cache_dir=tmp_path / "c2")
    with pytest.raises(HinetDeployError, match="2 measurement image"):
        Sensitivity(small_onnx, same, MeasureOptions(folder=folder, count=2, crop=64))


def test_sensitivity_command_writes_table_json_and_chart(small_onnx, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "report"
    assert main(["sensitivity", "--onnx", str(small_onnx), "--crop", "64", "--count", "2",
                 "--candidates", "5", "--screen-crop", "32", "--top", "3",
                 "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 1 |" in printed and "| 4 |" not in printed and "more in the JSON" in printed
    assert "float layers chosen by measurement" in printed
    data = json.loads((out / "small.json").read_text())
    full = [c for c in data["layers"] if not c["screened_out"]]
    assert len(full) == 5 and len(data["layers"]) > 5
    assert data["measurement"]["first_pass"] == {"candidates": 5, "crop": 32}
    assert "choice" in data and (out / "small.md").read_text().count("\n| ") >= len(data["layers"])
    assert (out / "small.png").read_bytes()[:4] == b"\x89PNG"


def test_int8_choice_options_are_checked(small_onnx, tmp_path, capsys):
    runs = [(["build", "--fp16", "--onnx", str(small_onnx), "--float-layers", "auto"],
             "--float-layers is for --int8"),
            (["build", "--int8", "--onnx", str(small_onnx), "--target-db", "45"],
             "are for --float-layers auto"),
            (["build", "--int8", "--onnx", str(small_onnx), "--float-layers", "auto", "conv_01"],
             "name none beside it"),
            (["fidelity", "--float-layers", "auto", "--float-macs-budget", "120%"],
             "not a share"),
            (["build", "--int8", "--onnx", str(small_onnx), "--float-layers", "no_such_layer"],
             "no_such_layer name")]
    for argv, message in runs:
        target = tmp_path / ("f" if argv[0] == "fidelity" else "e.engine")
        argv = argv + ["--out-dir" if argv[0] == "fidelity" else "-o", str(target)]
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's refusal of a bad value
            code = exc.code
        assert code == 2 and message in capsys.readouterr().err, argv
        assert not target.exists()


def test_build_with_auto_float_layers_names_them_in_the_sidecar(small_onnx, tmp_path):
    """`build --int8 --float-layers auto` on TensorRT-RTX (builds without a GPU)."""
    pytest.importorskip("tensorrt_rtx")
    from hinet_deploy.build.flow import GraphRequest, build
    from hinet_deploy.engines.build import BuildOptions, Profile

    calib = CalibOptions(count=4, crop=64, cache_dir=tmp_path / "cache",
                         auto=AutoFloat(target_db=None, macs_budget=0.05, measure=MEASURE))
    req = GraphRequest(onnx=shutil.copy(small_onnx, tmp_path / "small.onnx"), precision="int8",
                       out_dir=tmp_path / "engines", calib=calib)
    engine, sidecar = build(req, None, "tensorrt_rtx",
                            BuildOptions(Profile((1, 32, 32), (1, 64, 64), (1, 128, 128))))
    choice = sidecar.facts["float_choice"]
    assert choice["float_macs_share"] <= 0.05 and choice["layers"] == sidecar.facts["float_layers"]
    assert choice["measured_on"].startswith("held-out photographs")
    assert "-float" in engine.name or not choice["layers"]
    graph = onnx.load(sidecar.facts["onnx"])
    nodes = {n.name: n for n in graph.graph.node}
    producers = {o: n.op_type for n in graph.graph.node for o in n.output}
    for name in sidecar.facts["float_nodes"]:
        assert producers.get(nodes[name].input[0]) != "DequantizeLinear"  # float input


def test_on_the_demo_model_the_choice_reaches_45_db_with_fewer_float_macs(demo_onnx, tmp_path):
    """The acceptance of the automatic choice, on the trained demo denoiser with its defaults:
    45 dB against FP32 on the held-out crops, with fewer float MACs than any prefix of the default
    list that reaches it."""
    from hinet_deploy.export.precision import DEFAULT_FLOAT_LAYERS

    sens = Sensitivity(demo_onnx, CalibOptions(cache_dir=tmp_path / "cache"), log=lambda m: None)
    choice = sens.choose(AutoFloat(target_db=45.0))
    assert choice.reached and choice.psnr >= 45.0
    assert choice.int8_psnr < 45.0  # all-INT8 does not, so the choice did the work
    for k in range(1, len(DEFAULT_FLOAT_LAYERS) + 1):
        prefix = sens.listed(DEFAULT_FLOAT_LAYERS[:k])
        if prefix.psnr >= 45.0:
            assert choice.float_macs < prefix.float_macs
