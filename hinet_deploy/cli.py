"""`hinet-deploy <subcommand>`: the one CLI; export/to_onnx.py calls the same functions.

Errors a user can cause print as one line and exit 2; --debug shows the traceback instead.
"""
from __future__ import annotations

import argparse
import errno
import json
import sys
import tempfile
from pathlib import Path

from hinet_deploy.calib.photos import DEMO_NOISE_SIGMA
from hinet_deploy.export.precision import CALIBRATION_METHODS, DEFAULT_CALIBRATION
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.files import atomic_path, input_file, output_file, writable_dir

_WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM}
DEFAULT_BUILD_DIR = Path("build")  # under the directory the command runs in
LAST_EXPORT = DEFAULT_BUILD_DIR / "last-export.json"  # the graph `export` wrote last, for `build`
# Optional packages and the extra that installs each (the base install is the runtime alone).
EXTRA_OF = {"torch": "export", "onnx": "export", "onnx_graphsurgeon": "export",
            "skimage": "export", "matplotlib": "export", "onnxruntime": "onnxruntime",
            "tensorrt_rtx": "trt", "cuda": "trt", "av": "video", "ray": "cluster"}


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, refused in one line otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def noise_level(text: str) -> float:
    """An argparse type: a noise sigma on the 0-255 scale, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"{value:g} is not a noise level (0 to 255)")
    return value


_COMMON = argparse.ArgumentParser(add_help=False)
_COMMON.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def _command(sub, name: str, summary: str, *examples: str):
    """A subcommand whose --help ends with examples."""
    epilog = "examples:\n" + "\n".join(f"  hinet-deploy {name} {e}".rstrip() for e in examples)
    return sub.add_parser(name, parents=[_COMMON], help=summary, description=summary,
                          epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_export(sub):
    p = _command(sub, "export", "checkpoint -> verified ONNX graph (dynamic batch, height, width)",
                 "--ckpt HINet-GoPro.pth", "--ckpt demo -o build/demo.onnx",
                 "--ckpt sidd.pth --fixed-shape 1 256 256")
    p.add_argument("--ckpt", type=Path, default=None,
                   help="HINet checkpoint (.pth, BasicSR or bare state dict); `demo` for the shipped "
                        "demo model")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="ONNX file to write (default: build/<checkpoint name>.onnx)")
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
    from hinet_deploy.export.variants import DEMO_CHECKPOINT

    ckpt = _named_checkpoint(args.ckpt, DEMO_CHECKPOINT)
    if ckpt is None:
        raise HinetDeployError("name the checkpoint to export: --ckpt PATH (or --ckpt demo for "
                               "the shipped demo model)")
    input_file(ckpt, "checkpoint")
    out = output_file(args.output or DEFAULT_BUILD_DIR / f"{ckpt.stem}.onnx")
    loaded = load_checkpoint(ckpt, args.variant)
    report = export_onnx(loaded, out, opset=args.opset or DEFAULT_OPSET,
                         both_stages=args.both_stages, fixed_shape=args.fixed_shape)
    print(report.summary())
    _record_last_export(out, ckpt)
    return 0


def _named_checkpoint(arg: Path | None, demo: Path) -> Path | None:
    """The checkpoint the user named; the shipped demo model only when named `demo`."""
    return demo if arg is not None and str(arg) == "demo" else arg


def _checkpoint_or_demo(arg: Path | None) -> Path:
    """For the checking commands (validate, bench, fidelity): the demo model unless one is named."""
    from hinet_deploy.export.variants import DEMO_CHECKPOINT

    return input_file(_named_checkpoint(arg, DEMO_CHECKPOINT) or DEMO_CHECKPOINT, "checkpoint")


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


def _add_restore(sub):
    from hinet_deploy.runtime.image_files import DEFAULT_JPEG_QUALITY
    from hinet_deploy.runtime.tiling import DEFAULT_MODE, DEFAULT_OVERLAP, DEFAULT_TILE, MODES
    from hinet_deploy.runtime.video import DEFAULT_CODEC, DEFAULT_CRF

    p = _command(sub, "restore", "restore photos, folders and videos with a model (.pth, .onnx, "
                 ".engine)",
                 "holiday/ -o restored/ --model build/gopro.onnx",
                 "clip.mp4 -o out/ --model build/engines/gopro.fp16....engine --crf 16",
                 "scan.tif photo.jpg -o out/ --model sidd.pth --mode blend --tile 512",
                 "dashcam/ -o clean/ --model derain.onnx --codec h264_nvenc --overwrite")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (recursive; the output mirrors their layout) and "
                        "videos (anything FFmpeg decodes); with --ray also URIs (s3://, gs://, ...)")
    p.add_argument("-o", "--output", required=True,
                   help="folder to write into (same file names; made if missing); with --ray also "
                        "a URI")
    p.add_argument("--model", type=Path, required=True,
                   help="what the Restorer opens: a checkpoint (.pth), ONNX graph or engine")
    p.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                   help=f"blended tiles, the official 256 grids, or the whole image at once "
                        f"(default {DEFAULT_MODE}: the best measured quality and least memory; "
                        f"README)")
    p.add_argument("--tile", type=positive_int, default=None,
                   help=f"tile size in pixels for --mode blend (a multiple of 16; default "
                        f"{DEFAULT_TILE})")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                   help=f"blend: pixels neighbouring tiles share (default {DEFAULT_OVERLAP})")
    p.add_argument("--memory-budget-mb", type=positive_int, default=None,
                   help="an image whose whole-image run would need more host memory than this is "
                        "restored in blend tiles instead (default: 60%% of the memory available)")
    p.add_argument("--overwrite", action="store_true",
                   help="restore again where the output exists (default: skip it)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--jpeg-quality", type=positive_int, default=DEFAULT_JPEG_QUALITY,
                   help=f"JPEG and WebP outputs (default {DEFAULT_JPEG_QUALITY})")
    p.add_argument("--codec", default=DEFAULT_CODEC,
                   help=f"video encoder, FFmpeg's name: libx264, libx265, libsvtav1, h264_nvenc, "
                        f"hevc_nvenc, ... (default {DEFAULT_CODEC})")
    p.add_argument("--crf", type=int, default=DEFAULT_CRF,
                   help=f"video quality, lower is better, 0 lossless (CRF; NVENC's cq) "
                        f"(default {DEFAULT_CRF})")
    p.add_argument("--preset", default=None, help="encoder preset (e.g. slow, medium, p5)")
    p.add_argument("--pix-fmt", default=None,
                   help="video pixel format (default yuv420p; yuv420p10le for deeper sources)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads of ONNX Runtime (default: all)")
    p.add_argument("--ray", action="store_true",
                   help="restore on a Ray cluster (the `cluster` extra): the same inputs, outputs "
                        "and exit codes")
    p.add_argument("--ray-address", default=None,
                   help="with --ray: the cluster (e.g. ray://head:10001, or auto); default: start "
                        "a local Ray here and stop it at the end")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="with --ray: actors, each holding one model (default 1)")
    p.add_argument("--gpus-per-worker", type=float, default=0,
                   help="with --ray: GPUs per actor (1 for one engine per GPU; default 0)")
    p.add_argument("--threads-per-worker", type=positive_int, default=1,
                   help="with --ray: CPU threads per actor (default 1)")
    p.set_defaults(func=cmd_restore)


def _restore_plan(args):
    from hinet_deploy.restore import plan_jobs

    if any("://" in text for text in [*args.inputs, args.output]):
        if not args.ray:
            raise HinetDeployError("filesystem URIs (s3://, gs://, ...) are read and written by "
                                   "the Ray workers: add --ray")
        from hinet_deploy.cluster import plan_uri_jobs

        if "://" not in args.output:
            writable_dir(Path(args.output), "-o")
        return plan_uri_jobs(args.inputs, args.output)
    writable_dir(Path(args.output), "-o")
    return plan_jobs([Path(p) for p in args.inputs], Path(args.output))


def cmd_restore(args) -> int:
    from hinet_deploy.restore import RestoreOptions, run_restore, summary
    from hinet_deploy.runtime import Restorer
    from hinet_deploy.runtime.video import VideoOptions, check_encoder

    input_file(args.model, "model")
    plan = _restore_plan(args)
    video = VideoOptions(codec=args.codec, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt)
    if any(job.is_video for job in plan.jobs):
        check_encoder(args.codec)
    extra = {"threads": args.threads} if args.threads else {}
    from hinet_deploy.common.progress import say as log
    options = RestoreOptions(args.overwrite, args.quiet, args.jpeg_quality, video)
    restorer_options = {"mode": args.mode, "tile": args.tile, "overlap": args.overlap,
                        "memory_budget_mb": args.memory_budget_mb}
    if args.ray:
        from hinet_deploy.restore import RayOptions, run_restore_ray

        if args.ray_address is None:  # local: a bad model is one line here, not in every actor
            Restorer(args.model, **restorer_options, **extra).close()
        ray_options = RayOptions(args.ray_address, args.workers, args.gpus_per_worker,
                                 args.threads_per_worker)
        report = run_restore_ray(plan, args.model, restorer_options, options, ray_options, log)
        print(summary(report, plan))
        return 1 if report.failed else 0
    with Restorer(args.model, on_tiling=log, **restorer_options, **extra) as restorer:
        report = run_restore(plan, restorer, options, log)
    print(summary(report, plan))
    return 1 if report.failed else 0


def _add_claims(sub):
    from hinet_deploy.claims import BACKENDS, CLAIMS

    p = _command(sub, "claims", "the paper's MACs and speed-up claims: HINet against MPRNet, "
                 "measured side by side",
                 "", "--threads 2 --repeats 7 --json build/claims/cpu.json",
                 "--tasks gopro rain13k --backends pytorch --size 128 128")
    p.add_argument("--tasks", nargs="+", choices=tuple(CLAIMS), default=list(CLAIMS),
                   help="claims to check (default: all five)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=["pytorch", "onnxruntime"],
                   help="pytorch (FP32, on the GPU where there is one), onnxruntime (CPU), "
                        "pytorch-fp16 (GPU only) (default: pytorch onnxruntime)")
    p.add_argument("--size", type=positive_int, nargs=2, metavar=("H", "W"), default=(256, 256),
                   help="input height and width, multiples of 16 (default 256 256, the paper's)")
    p.add_argument("--repeats", type=positive_int, default=5,
                   help="timed rounds after one warm-up (default 5)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads of PyTorch and ONNX Runtime (default: all)")
    p.add_argument("--json", type=Path, default=DEFAULT_BUILD_DIR / "claims" / "claims.json",
                   help="JSON to write; the Markdown table (.md) and chart (.png) go beside it "
                        "(default build/claims/claims.json)")
    p.set_defaults(func=cmd_claims)


def cmd_claims(args) -> int:
    from hinet_deploy.claims import markdown, measure_claims, write_outputs

    output_file(args.json, "--json")
    report = measure_claims(args.tasks, args.backends, tuple(args.size), args.repeats, args.threads)
    md, png = write_outputs(report, args.json)
    print(markdown(report))
    print(f"json: {args.json}, table: {md}, chart: {png}")
    return 0


def _add_macs(sub):
    p = _command(sub, "macs", "parameters and MACs of a model (exact, and the paper's convention)",
                 "--variant gopro", "--ckpt HINet-SIDD-0.5x.pth --size 512 512",
                 "--onnx build/gopro.onnx --json")
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


def _add_demo(sub):
    p = _command(sub, "demo", "export the demo denoiser and restore held-out noisy photos",
                 "", "--image my_photo.png", "-o /tmp/demo --seed 3")
    p.add_argument("-o", "--out-dir", type=Path, default=DEFAULT_BUILD_DIR / "demo",
                   help="folder for the graph and images (default build/demo)")
    p.add_argument("--image", type=Path, default=None,
                   help="a clean 8-bit photo of your own to add noise to and restore")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from hinet_deploy.demo import format_rows, run_demo

    if args.image is not None:
        input_file(args.image, "image")
    writable_dir(args.out_dir, "-o")
    print(f"hinet-deploy demo -> {args.out_dir}")
    rows = run_demo(args.out_dir, args.image, args.seed)
    print(format_rows(rows))
    print(f"images: {args.out_dir}/side_by_side.png (noisy | restored | clean) and "
          f"clean/noisy/restored.png for {rows[0].image}")
    return 0


def _add_int8_options(p):
    p.add_argument("--calib-method", choices=CALIBRATION_METHODS, default=DEFAULT_CALIBRATION,
                   help=f"INT8 calibration (default {DEFAULT_CALIBRATION}: best on the demo model)")
    p.add_argument("--float-layers", nargs="*", default=None,
                   help="INT8: module prefixes kept in float (default: conv_01 conv_02 last sam12; "
                        "give none for all-INT8)")


def _calib_options(args, **extra):
    from hinet_deploy.pipeline import CalibOptions

    calib = CalibOptions(method=args.calib_method, **extra)
    if args.float_layers is not None:
        calib.float_layers = tuple(args.float_layers)
    return calib


def _add_build(sub):
    p = _command(sub, "build", "ONNX of a precision -> TensorRT engine + JSON sidecar",
                 "--fp16                      (the graph `export` wrote last here)",
                 "--fp16 --ckpt HINet-GoPro.pth --max 1 1088 1920",
                 "--int8 --onnx build/gopro.onnx --calib-dir my_frames/",
                 "--fp16 --ckpt demo --compute-capability SM86 SM89 SM120")
    prec = p.add_mutually_exclusive_group()
    for name, what in (("fp32", "FP32 throughout"), ("fp16", "FP16, instance norm kept in FP32"),
                       ("int8", "INT8 Q/DQ from calibration, first/last layers in float")):
        prec.add_argument(f"--{name}", dest="precision", action="store_const", const=name,
                          help=what)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ckpt", type=Path, help="checkpoint (`demo` for the shipped demo model)")
    src.add_argument("--onnx", type=Path, help="an FP32 graph from hinet-deploy export (default: "
                                               "the graph `export` wrote last in this directory)")
    p.add_argument("-o", "--output", type=Path, help="engine file (default: build/engines/<graph>.<profile>.<tensorrt>.engine)")
    p.add_argument("--variant", help="official architecture to load the checkpoint into")
    p.add_argument("--tensorrt", "--backend", dest="tensorrt", choices=("tensorrt", "tensorrt_rtx"),
                   help="which TensorRT builds the engine (default: tensorrt if importable, else "
                        "tensorrt_rtx)")
    p.add_argument("--min", type=positive_int, nargs=3, metavar=("N", "H", "W"),
                   help="smallest input the engine takes (default 1 64 64)")
    p.add_argument("--opt", type=positive_int, nargs=3, metavar=("N", "H", "W"),
                   help="input TensorRT tunes for (default 1 256 256)")
    p.add_argument("--max", type=positive_int, nargs=3, metavar=("N", "H", "W"),
                   help="largest input (default 4 1024 1024; H and W multiples of 16)")
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
    p.add_argument("--calib-count", type=positive_int, default=32, help="INT8: number of crops")
    p.add_argument("--calib-crop", type=positive_int, default=256, help="INT8: crop size")
    p.add_argument("--calib-mode", choices=("random", "grid"), default="random",
                   help="INT8: crops at random positions, or a regular grid (default random)")
    _add_int8_options(p)
    p.add_argument("--verbose", action="store_true", help="show the backend's log")
    p.set_defaults(func=cmd_build, precision=None)


def cmd_build(args) -> int:
    from hinet_deploy.engines.build import BuildOptions, Profile
    from hinet_deploy.export.variants import DEMO_CHECKPOINT
    from hinet_deploy.pipeline import GraphRequest, build

    if args.precision is None:
        raise HinetDeployError("choose a precision: --fp32, --fp16 or --int8")
    _check_build_inputs(args)
    defaults = Profile()
    profile = Profile(tuple(args.min or defaults.min), tuple(args.opt or defaults.opt),
                      tuple(args.max or defaults.max))
    calib = _calib_options(args, folder=args.calib_dir, count=args.calib_count,
                           crop=args.calib_crop, mode=args.calib_mode)
    ckpt, onnx_path = _named_checkpoint(args.ckpt, DEMO_CHECKPOINT), args.onnx
    if ckpt is None and onnx_path is None:
        onnx_path = _last_export()
        print(f"building from {onnx_path}, the graph `hinet-deploy export` wrote last here",
              flush=True)
    req = GraphRequest(ckpt=ckpt, onnx=onnx_path, variant=args.variant,
                       precision=args.precision, io_fp16=args.io_fp16, calib=calib,
                       hin_plugin=args.hin_plugin)
    if args.output is not None:
        req.out_dir = args.output.parent
    writable_dir(req.out_dir, "engine folder")
    options = BuildOptions(profile, args.workspace_mb, args.timing_cache,
                           tuple(args.compute_capability))
    engine, sidecar = build(req, args.output, args.tensorrt, options, args.verbose)
    print(f"wrote {engine} ({sidecar.facts['engine_bytes'] / 2**20:.1f} MB, {sidecar.tensorrt} "
          f"{sidecar.tensorrt_version}, {sidecar.precision}, built in "
          f"{sidecar.facts['build_seconds']} s) and {engine.name}.json")
    return 0


def _check_build_inputs(args) -> None:
    """Everything a build reads and writes, checked before its long work starts."""
    from hinet_deploy.export.metadata import read_graph_metadata

    if args.precision != "int8" and args.calib_dir is not None:
        raise HinetDeployError(f"--calib-dir is for --int8 (calibration); an --{args.precision} "
                               f"build uses no calibration images")
    if args.calib_dir is not None and not args.calib_dir.is_dir():
        raise HinetDeployError(f"calibration folder {args.calib_dir} "
                               + ("is not a folder" if args.calib_dir.exists() else "does not exist"))
    if args.onnx is not None:
        read_graph_metadata(args.onnx)
    elif args.ckpt is not None and str(args.ckpt) != "demo":
        input_file(args.ckpt, "checkpoint")
    if args.output is not None:
        output_file(args.output)


def _add_fidelity(sub):
    p = _command(sub, "fidelity",
                 "PSNR/SSIM of the FP32, FP16 and INT8 graphs vs PyTorch and clean images",
                 "", "--ckpt my_denoiser.pth --json fidelity.json", "--calib-method percentile")
    p.add_argument("--ckpt", type=Path, help="checkpoint (default: the demo model)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_BUILD_DIR / "fidelity",
                   help="folder for the graphs (default build/fidelity)")
    _add_int8_options(p)
    p.add_argument("--json", type=Path, help="also write every number to this JSON file")
    p.set_defaults(func=cmd_fidelity)


def cmd_fidelity(args) -> int:
    from hinet_deploy.fidelity import fidelity, format_rows, write_json
    from hinet_deploy.pipeline import GraphRequest

    calib = _calib_options(args)
    ckpt = _checkpoint_or_demo(args.ckpt)
    writable_dir(args.out_dir, "--out-dir")
    if args.json:
        output_file(args.json, "--json")
    rows = fidelity(GraphRequest(ckpt=ckpt, out_dir=args.out_dir, calib=calib))
    print(format_rows(rows))
    if args.json:
        write_json(rows, args.json)
    return 0


def _add_validate(sub):
    p = _command(sub, "validate",
                 "PSNR/SSIM of every backend and precision vs clean images and PyTorch",
                 "", "--ckpt HINet-SIDD-1x.pth --data SIDD/val --mode grids",
                 "--ckpt my_denoiser.pth --data clean_photos/ --sigma 15")
    p.add_argument("--ckpt", type=Path, help="checkpoint (default: the demo model)")
    p.add_argument("--data", type=Path, help="degraded/clean pairs (official layouts) or clean "
                   "images to add noise to; default: the shipped held-out photographs")
    p.add_argument("--sigma", type=noise_level, default=DEMO_NOISE_SIGMA,
                   help="noise for clean-only data (0-255)")
    p.add_argument("--mode", choices=("whole", "grids"), default="whole",
                   help="whole images, or the official 256-tile grids (default whole)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_BUILD_DIR / "validate",
                   help="folder for graphs and reports (default build/validate)")
    p.add_argument("--json", type=Path, help="default: OUT_DIR/report.json")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args) -> int:
    from hinet_deploy.validate import validate

    ckpt = _checkpoint_or_demo(args.ckpt)
    writable_dir(args.out_dir, "--out-dir")
    if args.json:
        output_file(args.json, "--json")
    report, text = validate(ckpt, args.data, args.sigma, args.mode, args.out_dir, args.json)
    print(text)
    print(f"report: {args.out_dir / 'report.md'}, {args.json or args.out_dir / 'report.json'}")
    return 130 if report["interrupted"] else 0


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT") from exc
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size {text!r}: a side is not at least 1")
    return height, width


def _add_bench(sub):
    p = _command(sub, "bench", "latency per backend and precision, side by side, with speed-ups",
                 "", "--sizes 256x256 1280x720 --repeats 9 --threads 2",
                 "--ckpt HINet-GoPro.pth --batch 1 4 --json gopro-bench.json")
    p.add_argument("--ckpt", type=Path, help="checkpoint (default: the demo model)")
    p.add_argument("--sizes", type=_size, nargs="+", default=None,
                   help="WIDTHxHEIGHT ... (default 256x256 1280x720 1920x1080)")
    p.add_argument("--batch", type=positive_int, nargs="+", default=[1],
                   help="batch sizes (default 1)")
    p.add_argument("--repeats", type=positive_int, default=5,
                   help="timed rounds after one warm-up (default 5)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: all)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_BUILD_DIR / "bench",
                   help="folder for graphs and reports (default build/bench)")
    p.add_argument("--json", type=Path, help="default: OUT_DIR/bench.json")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from hinet_deploy.bench import DEFAULT_SIZES, bench, markdown, write_json
    from hinet_deploy.pipeline import GraphRequest

    ckpt = _checkpoint_or_demo(args.ckpt)
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


def build_parser() -> argparse.ArgumentParser:
    from hinet_deploy import __version__

    parser = argparse.ArgumentParser(
        prog="hinet-deploy", description="HINet from checkpoint to verified ONNX graphs and TensorRT "
        "engines, and restoring photos and videos with them. `hinet-deploy COMMAND --help` for a "
        "command's options and examples.")
    parser.add_argument("--version", action="version", version=f"hinet-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_restore, _add_export, _add_macs, _add_claims, _add_demo, _add_build, _add_fidelity, _add_validate,
                _add_bench):
        add(sub)
    return parser


def main(argv=None, parser: argparse.ArgumentParser | None = None) -> int:
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF.get((exc.name or "").split(".")[0])
        if extra is None or args.debug:
            raise
        print(f"error: `hinet-deploy {args.command}` needs {exc.name}, which is not installed: "
              f"pip install 'hinet-deploy[{extra}]'", file=sys.stderr)
        return 2
    except HinetDeployError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the disk, not the program: full, read-only, gone
        if args.debug or exc.filename is None:
            raise
        print(f"error: cannot {'write' if exc.errno in _WRITE_ERRNOS else 'use'} {exc.filename}: "
              f"{exc.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
