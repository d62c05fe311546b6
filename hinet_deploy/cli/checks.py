"""`hinet-deploy validate`, `fidelity`, `bench`, `claims` and `macs`."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA
from hinet_deploy.cli.args import (add_int8_options, calib_options, checkpoint_or_demo, command,
                                   noise_level, positive_int, size_type)
from hinet_deploy.common.files import DEFAULT_OUTPUT_DIR, atomic_path, output_file, writable_dir
from hinet_deploy.runtime.tiling import DEFAULT_MODE, MODES


def add_claims(sub):
    from hinet_deploy.checks.claims import BACKENDS, CLAIMS

    p = command(sub, "claims", "the paper's MACs and speed-up claims: HINet against MPRNet, "
                 "measured side by side",
                 "", "--threads 2 --repeats 7 --json hinet-out/claims/cpu.json",
                 "--tasks gopro rain13k --backends pytorch --size 128 128")
    p.add_argument("--tasks", nargs="+", choices=tuple(CLAIMS), default=list(CLAIMS),
                   help="claims to check (default: all five)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=["pytorch", "onnxruntime"],
                   help="pytorch (FP32, on the GPU where there is one), onnxruntime (CPU), "
                        "pytorch-fp16 (GPU only), openvino and openvino-bf16 (CPU) (default: "
                        "pytorch onnxruntime)")
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
    report = measure_claims(args.tasks, args.backends, tuple(args.size), args.repeats, args.threads)
    md, png = write_outputs(report, args.json)
    print(markdown(report))
    print(f"json: {args.json}, table: {md}, chart: {png}")
    return 0


def add_macs(sub):
    p = command(sub, "macs", "parameters and MACs of a model (exact, and the paper's convention)",
                 "--variant gopro", "--ckpt HINet-SIDD-0.5x.pth --size 512 512",
                 "--onnx hinet-out/gopro.onnx --json")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--variant", help="an official variant (gopro, reds, sidd-1x, ...)")
    src.add_argument("--ckpt", type=Path, help="a checkpoint")
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

        loaded = random_model(args.variant) if args.variant else load_checkpoint(args.ckpt)
        name = args.variant or args.ckpt.name
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
    if args.json:
        write_json(rows, args.json)
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
    report, text = validate(ckpt, args.data, args.sigma, args.mode, args.out_dir, args.json)
    print(text)
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
    from hinet_deploy.checks.bench import DEFAULT_SIZES, bench, markdown, write_json
    from hinet_deploy.build.flow import GraphRequest

    ckpt = checkpoint_or_demo(args.ckpt)
    writable_dir(args.out_dir, "--out-dir")
    json_path = output_file(args.json or args.out_dir / "bench.json", "--json")
    req = GraphRequest(ckpt=ckpt, out_dir=args.out_dir / "graphs")
    report = bench(ckpt, req, tuple(args.sizes or DEFAULT_SIZES), tuple(args.batch),
                   args.repeats, args.threads)
    write_json(report, json_path)
    table = markdown(report)
    with atomic_path(json_path.with_suffix(".md")) as tmp:
        tmp.write_text(table + "\n")
    print(table)
    print(f"json: {json_path}, table: {json_path.with_suffix('.md')}")
    return 0
