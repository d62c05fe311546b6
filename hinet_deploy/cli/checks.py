"""`hinet-deploy validate`, `fidelity`, `bench`, `claims` and `macs`."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hinet_deploy.calib.data import DEFAULT_COUNT, DEFAULT_CROP
from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA
from hinet_deploy.checks.timing import MachineLoad
from hinet_deploy.cli.args import (add_choice_options, add_int8_options, calib_options,
                                   checkpoint_or_demo, command,
                                   noise_level, positive_int, size_type)
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.files import DEFAULT_OUTPUT_DIR, input_file, output_file, writable_dir
from hinet_deploy.export.precision import (CALIBRATION_METHODS, DEFAULT_CALIBRATION,
                                           DEFAULT_FLOAT_LAYERS)
from hinet_deploy.runtime.tiling import DEFAULT_MODE, MODES


def add_claims(sub):
    from hinet_deploy.checks.claims import CLAIMS, PYTORCH, backend_names

    p = command(sub, "claims", "the paper's MACs and speed-up claims: HINet against MPRNet, "
                 "measured side by side",
                 "", "--threads 2 --repeats 7 --json hinet-out/claims/cpu.json",
                 "--tasks gopro rain13k --backends pytorch --size 128 128")
    p.add_argument("--tasks", nargs="+", choices=tuple(CLAIMS), default=list(CLAIMS),
                   help="claims to check (default: all five)")
    p.add_argument("--backends", nargs="+", choices=backend_names(),
                   default=[PYTORCH, "onnxruntime:fp32"], metavar="BACKEND:PRECISION",
                   help=f"what runs the networks: pytorch:fp32 (eager, on the GPU where there is "
                        f"one), pytorch:fp16 (GPU only), and the graphs on each backend that runs "
                        f"them here ({', '.join(n for n in backend_names() if ':' in n and not n.startswith('pytorch'))}); "
                        f"the earlier names (pytorch, onnxruntime, openvino-bf16, ...) are taken "
                        f"too (default: pytorch:fp32 onnxruntime:fp32)")
    p.add_argument("--size", type=positive_int, nargs=2, metavar=("H", "W"), default=(256, 256),
                   help="input height and width, multiples of 16 (default 256 256, the paper's)")
    p.add_argument("--repeats", type=positive_int, default=5,
                   help="timed rounds after one warm-up (default 5)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads of PyTorch and ONNX Runtime (default: all)")
    p.add_argument("--json", type=Path, default=DEFAULT_OUTPUT_DIR / "claims" / "claims.json",
                   help=f"JSON to write; the Markdown table (.md) and chart (.png) go beside it "
                        f"(default {DEFAULT_OUTPUT_DIR}/claims/claims.json)")
    p.set_defaults(func=cmd_claims)


def cmd_claims(args) -> int:
    from hinet_deploy.checks.claims import markdown, measure_claims, write_outputs

    output_file(args.json, "--json")
    with MachineLoad() as load:
        report = measure_claims(args.tasks, args.backends, tuple(args.size), args.repeats,
                                args.threads)
    md, png = write_outputs(report, args.json)
    print(markdown(report))
    print(load.report())
    print(f"json: {args.json}, table: {md}, chart: {png}")
    return 0


def add_macs(sub):
    p = command(sub, "macs", "parameters and MACs of a model (exact, and the paper's convention)",
                 "--variant gopro", "--ckpt HINet-SIDD-0.5x.pth --size 512 512",
                 "--onnx hinet-out/gopro.onnx --json")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--variant", help="an official variant (gopro, reds, sidd-1x, ...) or demo")
    src.add_argument("--ckpt", type=Path, help="a checkpoint (`demo` for the shipped demo model)")
    src.add_argument("--onnx", type=Path, help="an exported graph")
    p.add_argument("--size", type=positive_int, nargs=2, metavar=("H", "W"), default=(256, 256),
                   help="input height and width counted at (default 256 256, the paper's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_macs)


def cmd_macs(args) -> int:
    import onnx

    from hinet_deploy.export.macs import count_macs
    from hinet_deploy.export.metadata import load_graph

    height, width = args.size
    if args.onnx:
        count = count_macs(load_graph(args.onnx), height, width)
        name = args.onnx.name
    else:
        from hinet_deploy.export.checkpoint import load_checkpoint, random_model
        from hinet_deploy.export.onnx_export import export_onnx

        from hinet_deploy.export.shipped import DEMO_CHECKPOINT

        # `demo` names the shipped demo model, as build --ckpt demo does
        ckpt = DEMO_CHECKPOINT if "demo" in (args.variant, str(args.ckpt)) else args.ckpt
        loaded = load_checkpoint(input_file(ckpt, "checkpoint")) if ckpt else \
            random_model(args.variant)
        name = "demo" if ckpt == DEMO_CHECKPOINT else args.variant or args.ckpt.name
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "count.onnx"
            export_onnx(loaded, path, verify_shapes=[], log=lambda m: None)
            count = count_macs(onnx.load(str(path)), height, width)
    if args.json:
        print(json.dumps({"model": name, **count.as_dict()}))
    else:
        print(f"{name} at 3x{height}x{width}: {count.params / 1e6:.2f} M parameters, "
              f"{count.macs / 1e9:.2f} G MACs exact, {count.macs_paper / 1e9:.2f} G paper convention "
              f"(transposed convs {count.deconv_macs / 1e9:.2f} G exact vs "
              f"{count.deconv_macs_paper / 1e9:.2f} G; bias ops {count.bias_ops / 1e9:.2f} G)")
    return 0


def add_fidelity(sub):
    p = command(sub, "fidelity",
                 "PSNR/SSIM of the FP32, FP16 and INT8 graphs vs PyTorch and clean images",
                 "", "--ckpt my_denoiser.pth --json fidelity.json", "--calib-method percentile")
    p.add_argument("--ckpt", type=Path, help="checkpoint (default: the demo model)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUTPUT_DIR / "fidelity",
                   help=f"folder for the graphs (default {DEFAULT_OUTPUT_DIR}/fidelity)")
    add_int8_options(p)
    p.add_argument("--json", type=Path, help="also write every number to this JSON file")
    p.set_defaults(func=cmd_fidelity)


def cmd_fidelity(args) -> int:
    from hinet_deploy.checks.fidelity import fidelity, format_rows, write_json
    from hinet_deploy.build.flow import GraphRequest

    calib = calib_options(args)
    ckpt = checkpoint_or_demo(args.ckpt)
    writable_dir(args.out_dir, "--out-dir")
    if args.json:
        output_file(args.json, "--json")
    rows = fidelity(GraphRequest(ckpt=ckpt, out_dir=args.out_dir, calib=calib))
    print(format_rows(rows))
    if calib.auto is not None and calib.auto.measure.folder is None:
        print("note: --float-layers auto chose the INT8 float layers on these same held-out "
              "photographs; --measure-images with other images makes the INT8 row independent")
    if args.json:
        write_json(rows, args.json)
    return 0


def add_sensitivity(sub):
    from hinet_deploy.build.calibration import (DEFAULT_MEASURE_COUNT, DEFAULT_MEASURE_CROP,
                                                DEFAULT_SCREEN_CROP)

    p = command(sub, "sensitivity", "what INT8 costs each layer: PSNR against FP32 with one layer "
                "at a time kept in float, ranked, with MACs; and the float layers to choose",
                "", "--ckpt my_denoiser.pth --images held_out_frames/ --calib-dir my_frames/",
                "--ckpt gopro.pth --crop 128 --count 2 --candidates 12",
                "--ckpt demo --target-db 46",
                "--ckpt demo --openvino            (for OpenVINO INT8 on the CPU)")
    p.add_argument("--openvino", action="store_true",
                   help="measure for OpenVINO INT8 (NNCF's quantizer, run in OpenVINO), as "
                        "`build --int8 --openvino` ships it; default: TensorRT's Q/DQ graph")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ckpt", type=Path, help="checkpoint (default: the demo model)")
    src.add_argument("--onnx", type=Path, help="an FP32 graph from hinet-deploy export")
    p.add_argument("--images", type=Path, help="images to measure on, none of them a calibration "
                   "image (default: the shipped held-out photographs with the demo noise)")
    p.add_argument("--count", type=positive_int, default=DEFAULT_MEASURE_COUNT,
                   help=f"measurement crops (default {DEFAULT_MEASURE_COUNT})")
    p.add_argument("--crop", type=positive_int, default=DEFAULT_MEASURE_CROP,
                   help=f"measurement crop size (default {DEFAULT_MEASURE_CROP})")
    p.add_argument("--candidates", type=positive_int, default=None,
                   help=f"a first pass on one {DEFAULT_SCREEN_CROP}x{DEFAULT_SCREEN_CROP} crop "
                        f"ranks every layer; only the N most sensitive are measured in full "
                        f"(bounds the cost for the big variants)")
    p.add_argument("--screen-crop", type=positive_int, default=DEFAULT_SCREEN_CROP,
                   help=f"the first pass's crop size (default {DEFAULT_SCREEN_CROP})")
    p.add_argument("--calib-dir", type=Path, help="folder of calibration images (default: the "
                   "shipped training photographs with the demo noise)")
    p.add_argument("--calib-method", choices=CALIBRATION_METHODS, default=DEFAULT_CALIBRATION,
                   help=f"INT8 calibration for TensorRT (default {DEFAULT_CALIBRATION}; "
                        f"--openvino: NNCF's own)")
    p.add_argument("--calib-count", type=positive_int, default=DEFAULT_COUNT,
                   help=f"calibration crops (default {DEFAULT_COUNT}, as the build's)")
    p.add_argument("--calib-crop", type=positive_int, default=DEFAULT_CROP,
                   help=f"calibration crop size (default {DEFAULT_CROP}, as the build's)")
    add_choice_options(p, "the choice shown: ")
    p.add_argument("--top", type=positive_int, default=20,
                   help="rows of the ranked table printed (default 20; all in the files)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUTPUT_DIR / "sensitivity",
                   help=f"folder for the table (.md), JSON and chart (.png) (default "
                        f"{DEFAULT_OUTPUT_DIR}/sensitivity)")
    p.add_argument("--json", type=Path, help="JSON to write (default OUT_DIR/<graph>.json)")
    p.set_defaults(func=cmd_sensitivity)


def cmd_sensitivity(args) -> int:
    from hinet_deploy.build.calibration import AutoFloat, CalibOptions, MeasureOptions
    from hinet_deploy.build.flow import GraphRequest, fp32_graph
    from hinet_deploy.build.sensitivity import Sensitivity, format_report, report_data
    from hinet_deploy.checks.report import write_report
    from hinet_deploy.checks.figures import sensitivity_chart

    for folder, flag in ((args.images, "--images"), (args.calib_dir, "--calib-dir")):
        if folder is not None and not folder.is_dir():
            raise HinetDeployError(f"{flag} {folder} is not a folder")
    writable_dir(args.out_dir, "--out-dir")
    ckpt = None if args.onnx else checkpoint_or_demo(args.ckpt)
    graph = fp32_graph(GraphRequest(ckpt=ckpt, onnx=args.onnx))  # the one build reuses
    stem = graph.name.removesuffix(".onnx").removesuffix(".fp32")
    json_path = args.json or args.out_dir / f"{stem}{'.openvino' if args.openvino else ''}.json"
    output_file(json_path, "--json")
    calib = CalibOptions(folder=args.calib_dir, method=args.calib_method, count=args.calib_count,
                         crop=args.calib_crop)
    measure = MeasureOptions(args.images, args.count, args.crop, candidates=args.candidates,
                             screen_crop=args.screen_crop)
    auto = AutoFloat(args.target_db, args.float_macs_budget, measure)
    if args.openvino:
        from hinet_deploy.build.nncf_model import require_nncf

        require_nncf()
    sensitivity = Sensitivity(graph, calib, measure,
                              target="openvino" if args.openvino else "tensorrt")
    report = sensitivity.report()
    choice = sensitivity.choose(auto)
    default = sensitivity.listed(DEFAULT_FLOAT_LAYERS)
    compared = (f"the default float layers ({' '.join(DEFAULT_FLOAT_LAYERS)}): "
                f"{default.psnr:.2f} dB against FP32 (worst crop {default.worst_psnr:.2f}), "
                f"{100 * default.share:.1f} % of MACs in float")
    table = format_report(report)
    md, png = json_path.with_suffix(".md"), json_path.with_suffix(".png")
    write_report(json_path, report_data(report, choice),
                 f"{table}\n\n{choice.summary()}\n\n{compared}",
                 figures={png: lambda path: sensitivity_chart(report, path, choice)})
    print(format_report(report, args.top))
    print()
    print(choice.summary())
    print(compared)
    print(f"table: {md}, json: {json_path}, chart: {png}")
    return 0


def add_validate(sub):
    p = command(sub, "validate",
                 "PSNR/SSIM of every backend and precision vs clean images and PyTorch",
                 "", "--ckpt HINet-SIDD-1x.pth --data SIDD/val --mode grids",
                 "--ckpt my_denoiser.pth --data clean_photos/ --sigma 15")
    p.add_argument("--ckpt", type=Path, help="checkpoint (default: the demo model)")
    p.add_argument("--data", type=Path, help="degraded/clean pairs (official layouts) or clean "
                   "images to add noise to; default: the shipped held-out photographs")
    p.add_argument("--sigma", type=noise_level, default=DEMO_NOISE_SIGMA,
                   help="noise for clean-only data (0-255)")
    p.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                   help=f"as the Restorer runs: blended tiles, the official 256-tile grids or whole "
                        f"images (default {DEFAULT_MODE}, the Restorer's and restore's)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUTPUT_DIR / "validate",
                   help=f"folder for graphs and reports (default {DEFAULT_OUTPUT_DIR}/validate)")
    p.add_argument("--json", type=Path, help="default: OUT_DIR/report.json")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args) -> int:
    from hinet_deploy.checks.validate import validate

    ckpt = checkpoint_or_demo(args.ckpt)
    writable_dir(args.out_dir, "--out-dir")
    if args.json:
        output_file(args.json, "--json")
    with MachineLoad() as load:
        report, text = validate(ckpt, args.data, args.sigma, args.mode, args.out_dir, args.json)
    print(text)
    print(load.report())
    print(f"report: {args.out_dir / 'report.md'}, {args.json or args.out_dir / 'report.json'}")
    return 130 if report["interrupted"] else 0


def add_bench(sub):
    p = command(sub, "bench", "latency per backend and precision, side by side, with speed-ups",
                 "", "--sizes 256x256 1280x720 --repeats 9 --threads 2",
                 "--ckpt HINet-GoPro.pth --batch 1 4 --json gopro-bench.json")
    p.add_argument("--ckpt", type=Path, help="checkpoint (default: the demo model)")
    p.add_argument("--sizes", type=size_type, nargs="+", default=None,
                   help="WIDTHxHEIGHT ... (default 256x256 1280x720 1920x1080)")
    p.add_argument("--batch", type=positive_int, nargs="+", default=[1],
                   help="batch sizes (default 1)")
    p.add_argument("--repeats", type=positive_int, default=5,
                   help="timed rounds after one warm-up (default 5)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: all)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUTPUT_DIR / "bench",
                   help=f"folder for graphs and reports (default {DEFAULT_OUTPUT_DIR}/bench)")
    p.add_argument("--json", type=Path, help="default: OUT_DIR/bench.json")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from hinet_deploy.checks.bench import DEFAULT_SIZES, bench, markdown, write_outputs
    from hinet_deploy.build.flow import GraphRequest

    ckpt = checkpoint_or_demo(args.ckpt)
    writable_dir(args.out_dir, "--out-dir")
    json_path = output_file(args.json or args.out_dir / "bench.json", "--json")
    req = GraphRequest(ckpt=ckpt, out_dir=args.out_dir / "graphs")
    with MachineLoad() as load:
        report = bench(ckpt, req, tuple(args.sizes or DEFAULT_SIZES), tuple(args.batch),
                       args.repeats, args.threads)
    md = write_outputs(report, json_path)
    table = markdown(report)
    print(table)
    print(load.report())
    print(f"json: {json_path}, table: {md}")
    return 0
