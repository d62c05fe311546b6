"""`hinet-deploy export` and `build` (the card's to_onnx.py and build_trt.py call these)."""
from __future__ import annotations

import json
from pathlib import Path

from hinet_deploy.cli.args import (add_int8_options, calib_options, command, named_checkpoint,
                                   positive_int)
from hinet_deploy.calib.data import CROP_MODES, DEFAULT_COUNT, DEFAULT_CROP, DEFAULT_CROP_MODE
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.limits import HINET_SIZE_MULTIPLE
from hinet_deploy.engines.build import DEFAULT_MAX, DEFAULT_MIN, DEFAULT_OPT
from hinet_deploy.engines.tensorrt_module import MODULES as TENSORRT_MODULES
from hinet_deploy.common.files import (DEFAULT_OPENVINO_DIR, DEFAULT_OUTPUT_DIR, atomic_path,
                                       input_file, output_file, writable_dir)

def _shape(shape) -> str:
    return " ".join(map(str, shape))


LAST_EXPORT = DEFAULT_OUTPUT_DIR / "last-export.json"  # the graph `export` wrote last, for `build`


def add_export(sub):
    p = command(sub, "export", "checkpoint -> verified ONNX graph (dynamic batch, height, width)",
                 "--ckpt HINet-GoPro.pth", "--ckpt demo -o hinet-out/demo.onnx",
                 "--ckpt sidd.pth --fixed-shape 1 256 256")
    p.add_argument("--ckpt", type=Path, default=None,
                   help="HINet checkpoint (.pth, BasicSR or bare state dict); `demo` for the shipped "
                        "demo model")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help=f"ONNX file to write (default {DEFAULT_OUTPUT_DIR}/<checkpoint name>"
                        f".onnx)")
    p.add_argument("--variant", default=None,
                   help="official architecture to load into (default: inferred from the weights)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, 11 to 22 (default 17)")
    p.add_argument("--fixed-shape", type=positive_int, nargs=3, metavar=("N", "H", "W"), default=None,
                   help="export a static N x 3 x H x W graph instead of dynamic batch/height/width")
    p.add_argument("--both-stages", action="store_true",
                   help="also output the stage-1 image as `output_stage1`")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from hinet_deploy.export.checkpoint import load_checkpoint
    from hinet_deploy.export.onnx_export import DEFAULT_OPSET, export_onnx
    from hinet_deploy.export.shipped import DEMO_CHECKPOINT

    ckpt = named_checkpoint(args.ckpt, DEMO_CHECKPOINT)
    if ckpt is None:
        raise HinetDeployError("name the checkpoint to export: --ckpt PATH (or --ckpt demo for "
                               "the shipped demo model)")
    input_file(ckpt, "checkpoint")
    out = output_file(args.output or DEFAULT_OUTPUT_DIR / f"{ckpt.stem}.onnx")
    loaded = load_checkpoint(ckpt, args.variant)
    report = export_onnx(loaded, out, opset=args.opset or DEFAULT_OPSET,
                         both_stages=args.both_stages, fixed_shape=args.fixed_shape)
    print(report.summary())
    _record_last_export(out, ckpt)
    return 0


def _record_last_export(graph: Path, ckpt: Path) -> None:
    """Where `export` wrote, so that `build` with no model named builds that graph (the card's
    two-step flow), and says so."""
    with atomic_path(LAST_EXPORT) as tmp:
        tmp.write_text(json.dumps({"onnx": str(graph.resolve()), "checkpoint": str(ckpt)}) + "\n")


def _last_export() -> Path:
    if not LAST_EXPORT.is_file():
        raise HinetDeployError("name the model to build: --onnx GRAPH or --ckpt CHECKPOINT (or "
                               "--ckpt demo), or run `hinet-deploy export --ckpt ...` here first")
    try:
        return Path(json.loads(LAST_EXPORT.read_text())["onnx"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HinetDeployError(f"{LAST_EXPORT} is unreadable ({exc}): name the model with --onnx "
                               f"or --ckpt") from exc


def add_stand_in(sub):
    p = command(sub, "stand-in", "a checkpoint of an official variant with random weights, to try "
                "the official-size path before the real weights are at hand",
                "gopro -o gopro.pth", "sidd-0.5x -o sidd.pth --seed 1")
    p.add_argument("variant", help="the official architecture (gopro, reds, sidd-1x, ...: its "
                                   "shapes and keys; the weights are random)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="checkpoint to write (BasicSR format, like the official files)")
    p.add_argument("--seed", type=int, default=0, help="of the random weights")
    p.set_defaults(func=cmd_stand_in)


def cmd_stand_in(args) -> int:
    from hinet_deploy.export.checkpoint import random_model, save_basicsr

    out = output_file(args.output)
    loaded = random_model(args.variant, args.seed)
    save_basicsr(loaded.net.state_dict(), out)
    params = sum(p.numel() for p in loaded.net.parameters())
    print(f"wrote {out}: HINet {args.variant} with random weights ({params / 1e6:.2f} M "
          f"parameters, {out.stat().st_size / 2**20:.0f} MB); it restores nothing, but every "
          f"command runs on it as on the official file")
    return 0


def add_build(sub):
    p = command(sub, "build", "ONNX of a precision -> TensorRT engine + JSON sidecar",
                 "--fp16                      (the graph `export` wrote last here)",
                 "--fp16 --ckpt HINet-GoPro.pth --max 1 1088 1920",
                 "--int8 --onnx hinet-out/gopro.onnx --calib-dir my_frames/",
                 "--int8 --ckpt demo --float-layers auto --target-db 45",
                 "--int8 --openvino --ckpt demo --float-layers auto   (CPUs: OpenVINO INT8)",
                 "--fp16 --ckpt demo --compute-capability SM86 SM89 SM120")
    prec = p.add_mutually_exclusive_group()
    for name, what in (("fp32", "FP32 throughout"), ("fp16", "FP16, instance norm kept in FP32"),
                       ("int8", "INT8 Q/DQ from calibration, image-facing layers in float "
                                "(or measured ones: --float-layers auto)")):
        prec.add_argument(f"--{name}", dest="precision", action="store_const", const=name,
                          help=what)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ckpt", type=Path, help="checkpoint (`demo` for the shipped demo model)")
    src.add_argument("--onnx", type=Path, help="an FP32 graph from hinet-deploy export (default: "
                                               "the graph `export` wrote last in this directory)")
    p.add_argument("--openvino", action="store_true",
                   help="with --int8: an OpenVINO INT8 model for CPUs (NNCF's quantizer; IR with a "
                        "sidecar) instead of a TensorRT engine")
    p.add_argument("-o", "--output", type=Path,
                   help=f"engine file (default {DEFAULT_OUTPUT_DIR}/engines/<graph>.<profile>."
                        f"<tensorrt>.engine; with --openvino {DEFAULT_OUTPUT_DIR}/openvino/<graph>."
                        f"openvino-int8.xml)")
    p.add_argument("--variant", help="official architecture to load the checkpoint into")
    p.add_argument("--tensorrt", choices=TENSORRT_MODULES,
                   help="which TensorRT builds the engine (default: tensorrt if importable, else "
                        "tensorrt_rtx)")
    p.add_argument("--min", type=positive_int, nargs=3, metavar=("N", "H", "W"),
                   help=f"smallest input the engine takes (default {_shape(DEFAULT_MIN)})")
    p.add_argument("--opt", type=positive_int, nargs=3, metavar=("N", "H", "W"),
                   help=f"input TensorRT tunes for (default {_shape(DEFAULT_OPT)})")
    p.add_argument("--max", type=positive_int, nargs=3, metavar=("N", "H", "W"),
                   help=f"largest input (default {_shape(DEFAULT_MAX)}; H and W multiples of "
                        f"{HINET_SIZE_MULTIPLE})")
    p.add_argument("--workspace-mb", type=positive_int, default=None,
                   help="cap on TensorRT's scratch memory per layer, in MB (default: no cap, "
                        "TensorRT's own default of the GPU's memory; a low cap can rule out every "
                        "tactic of a layer)")
    p.add_argument("--timing-cache", type=Path,
                   help="full TensorRT's timing cache file (default: beside the engine)")
    p.add_argument("--compute-capability", nargs="+", default=(), metavar="SMxx",
                   help="TensorRT-RTX targets, e.g. SM86 SM89")
    p.add_argument("--io-fp16", action="store_true", help="FP16 engine inputs and outputs")
    p.add_argument("--hin-plugin", action="store_true",
                   help="fold each HIN block into the fused plugin (falls back, saying why, where "
                        "the backend cannot host it)")
    p.add_argument("--calib-dir", type=Path, help="INT8: folder of calibration images")
    p.add_argument("--calib-count", type=positive_int, default=DEFAULT_COUNT,
                   help=f"INT8: number of crops (default {DEFAULT_COUNT})")
    p.add_argument("--calib-crop", type=positive_int, default=DEFAULT_CROP,
                   help=f"INT8: crop size (default {DEFAULT_CROP})")
    p.add_argument("--calib-mode", choices=CROP_MODES, default=DEFAULT_CROP_MODE,
                   help=f"INT8: crops at random positions, or a regular grid (default "
                        f"{DEFAULT_CROP_MODE})")
    add_int8_options(p)
    p.add_argument("--verbose", action="store_true", help="show the backend's log")
    p.set_defaults(func=cmd_build, precision=None)


def cmd_build(args) -> int:
    from hinet_deploy.engines.build import BuildOptions, Profile, runs_on
    from hinet_deploy.export.shipped import DEMO_CHECKPOINT
    from hinet_deploy.build.flow import GraphRequest, build

    if args.precision is None:
        raise HinetDeployError("choose a precision: --fp32, --fp16 or --int8")
    _check_build_inputs(args)
    defaults = Profile()
    profile = Profile(tuple(args.min or defaults.min), tuple(args.opt or defaults.opt),
                      tuple(args.max or defaults.max))
    calib = calib_options(args, folder=args.calib_dir, count=args.calib_count,
                           crop=args.calib_crop, mode=args.calib_mode)
    ckpt, onnx_path = named_checkpoint(args.ckpt, DEMO_CHECKPOINT), args.onnx
    if ckpt is None and onnx_path is None:
        onnx_path = _last_export()
        print(f"building from {onnx_path}, the graph `hinet-deploy export` wrote last here",
              flush=True)
    req = GraphRequest(ckpt=ckpt, onnx=onnx_path, variant=args.variant,
                       precision=args.precision, io_fp16=args.io_fp16, calib=calib,
                       hin_plugin=args.hin_plugin)
    if args.openvino:
        req.out_dir = DEFAULT_OPENVINO_DIR
    if args.output is not None:
        req.out_dir = args.output.parent
    writable_dir(req.out_dir, "model folder" if args.openvino else "engine folder")
    if args.openvino:
        return _build_openvino(req, args.output)
    options = BuildOptions(profile, args.workspace_mb, args.timing_cache,
                           tuple(args.compute_capability))
    engine, sidecar = build(req, args.output, args.tensorrt, options, args.verbose)
    plugin = f", {sidecar.facts['plugin_layers']} fused HIN plugin layers" if sidecar.hin_plugin \
        else ""
    print(f"wrote {engine} ({sidecar.facts['engine_bytes'] / 2**20:.1f} MB, {sidecar.tensorrt} "
          f"{sidecar.tensorrt_version}, {sidecar.precision}{plugin}, built in "
          f"{sidecar.facts['build_seconds']} s) and {engine.name}.json; it runs on "
          f"{runs_on(sidecar)}")
    choice = sidecar.facts.get("float_choice")
    if choice:
        print(f"float layers chosen by measurement: {', '.join(choice['layers']) or 'none'} "
              f"({choice['psnr_vs_fp32']:.2f} dB against FP32 on the measurement crops, "
              f"{100 * choice['float_macs_share']:.1f} % of MACs in float"
              + ("" if choice["reached"] else f"; target {choice['target_db']:g} dB NOT reached")
              + ")")
    return 0


def _build_openvino(req, output) -> int:
    from hinet_deploy.build.flow import build_openvino

    path, facts = build_openvino(req, output)
    choice = facts.get("float_choice")
    if choice:
        print(f"float layers chosen by measurement on OpenVINO INT8: "
              f"{', '.join(choice['layers']) or 'none'} ({100 * choice['float_macs_share']:.1f} % "
              f"of MACs in float" + ("" if choice["reached"] else
                                     f"; target {choice['target_db']:g} dB NOT reached") + ")")
    size = (path.stat().st_size + path.with_suffix(".bin").stat().st_size) / 2**20
    print(f"OpenVINO INT8 against FP32 on {facts['measurement']['crops']} held-out crops of "
          f"{facts['measurement']['crop']}: {facts['psnr_vs_fp32']:.2f} dB (worst "
          f"{facts['worst_psnr_vs_fp32']:.2f}); float layers: "
          f"{', '.join(facts['float_layers']) or 'none'}")
    print(f"wrote {path} ({size:.1f} MB with {path.with_suffix('.bin').name}, OpenVINO "
          f"{facts['openvino'].split('-')[0]}, NNCF {facts['nncf']}, int8) and {path.name}.json; "
          f"run it with `hinet-deploy restore --model {path} ...`")
    return 0


# What only a TensorRT engine build takes (dest -> flag), refused with --openvino.
TENSORRT_ONLY = {"tensorrt": "--tensorrt", "min": "--min", "opt": "--opt", "max": "--max",
                 "workspace_mb": "--workspace-mb", "timing_cache": "--timing-cache",
                 "compute_capability": "--compute-capability", "io_fp16": "--io-fp16",
                 "hin_plugin": "--hin-plugin"}


def _check_build_inputs(args) -> None:
    """Everything a build reads and writes, checked before its long work starts."""
    from hinet_deploy.export.metadata import read_graph_metadata

    if args.openvino:
        from hinet_deploy.build.nncf_model import require_nncf
        from hinet_deploy.build.openvino_int8 import check_output

        if args.precision != "int8":
            runs_at = "bf16" if args.precision == "fp16" else "fp32"
            raise HinetDeployError(f"--openvino builds INT8 models; OpenVINO runs the FP32 graph "
                                   f"itself at {args.precision}: `hinet-deploy restore --backend "
                                   f"openvino --precision {runs_at} ...`")
        given = [flag for dest, flag in TENSORRT_ONLY.items() if getattr(args, dest)]
        if given:
            raise HinetDeployError(f"{', '.join(given)}: for TensorRT engines, not --openvino")
        if args.output is not None:
            check_output(args.output)
        require_nncf()
    if args.precision != "int8" and args.calib_dir is not None:
        raise HinetDeployError(f"--calib-dir is for --int8 (calibration); an --{args.precision} "
                               f"build uses no calibration images")
    if args.precision != "int8" and args.float_layers is not None:
        raise HinetDeployError(f"--float-layers is for --int8; an --{args.precision} build has "
                               f"no INT8 layers")
    if args.calib_dir is not None and not args.calib_dir.is_dir():
        raise HinetDeployError(f"calibration folder {args.calib_dir} "
                               + ("is not a folder" if args.calib_dir.exists() else "does not exist"))
    if args.onnx is not None:
        read_graph_metadata(args.onnx)
    elif args.ckpt is not None and str(args.ckpt) != "demo":
        input_file(args.ckpt, "checkpoint")
    if args.output is not None:
        output_file(args.output)
