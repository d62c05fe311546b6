"""`hinet-deploy restore`: parse, plan, run locally or on Ray, print the summary."""
from __future__ import annotations

import time
from pathlib import Path

from hinet_deploy.cli.args import command, positive_float, positive_int, quality
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.files import input_file, writable_dir


def add_restore(sub):
    from hinet_deploy.runtime.backends import BACKENDS
    from hinet_deploy.runtime.image_files import DEFAULT_JPEG_QUALITY
    from hinet_deploy.runtime.tiling import DEFAULT_MODE, DEFAULT_OVERLAP, DEFAULT_TILE, MODES
    from hinet_deploy.runtime.video import DEFAULT_CODEC, DEFAULT_CRF

    p = command(sub, "restore", "restore photos, folders and videos with a model (.pth, .onnx, "
                 ".engine)",
                 "holiday/ -o restored/ --model hinet-out/gopro.onnx",
                 "clip.mp4 -o out/ --model hinet-out/engines/gopro.fp16....engine --crf 16",
                 "scan.tif photo.jpg -o out/ --model sidd.pth --mode blend --tile 512",
                 "dashcam/ -o clean/ --model derain.onnx --codec h264_nvenc --overwrite")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (recursive; the output mirrors their layout) and "
                        "videos (anything FFmpeg decodes); with --ray also URIs (s3://, gs://, ...)")
    p.add_argument("-o", "--output", required=True,
                   help="folder to write into (same file names; made if missing), or with one "
                        "input file the file to write (an image or video name); with --ray also "
                        "a URI")
    p.add_argument("--model", type=Path, required=True,
                   help="what the Restorer opens: a checkpoint (.pth), ONNX graph or engine; "
                        "`demo` for the shipped demo denoiser")
    p.add_argument("--backend", choices=tuple(BACKENDS), default=None,
                   help="what runs the model (default: by its file type: .pth pytorch, .onnx "
                        "onnxruntime, .engine tensorrt)")
    p.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                   help=f"blended tiles, the official 256 grids, or the whole image at once "
                        f"(default {DEFAULT_MODE}: the best measured quality and least memory; "
                        f"docs/restore.md)")
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
    p.add_argument("--max-megapixels", type=positive_float, default=None,
                   help="refuse images and video frames larger than this, from their headers, "
                        "before decoding (default: sized to the memory available; also "
                        "$HINET_DEPLOY_MAX_PIXELS)")
    p.add_argument("--jpeg-quality", type=quality, default=DEFAULT_JPEG_QUALITY,
                   help=f"JPEG and WebP outputs (default {DEFAULT_JPEG_QUALITY})")
    p.add_argument("--codec", default=None,
                   help=f"video encoder, FFmpeg's name: libx264, libx265, libsvtav1, h264_nvenc, "
                        f"hevc_nvenc, ... (default: the input's codec family, HEVC -> libx265, "
                        f"AV1 -> libsvtav1, VP9 -> libvpx-vp9, others {DEFAULT_CODEC})")
    p.add_argument("--crf", type=int, default=DEFAULT_CRF,
                   help=f"video quality, lower is better, 0 lossless (CRF; NVENC's cq) "
                        f"(default {DEFAULT_CRF})")
    p.add_argument("--preset", default=None, help="encoder preset (e.g. slow, medium, p5)")
    p.add_argument("--pix-fmt", default=None,
                   help="video pixel format (default: the input's chroma and bit depth where the "
                        "encoder takes them, else yuv420p, or yuv420p10le for deeper sources)")
    p.add_argument("--verbose", action="store_true",
                   help="show the video encoders' own logs (x265's, SVT-AV1's)")
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
    add_backend_options(p)
    p.set_defaults(func=cmd_restore)


BACKEND_OPTION = "backend_option_"  # the dest prefix of the options the backend table declares


def add_backend_options(p) -> None:
    """One --NAME per option a backend of the table offers (its Options' fields marked cli), with
    the backends that take it: the table is the one place options are declared."""
    from hinet_deploy.runtime.backends import BACKENDS

    offered: dict[str, tuple] = {}
    for name, cls in BACKENDS.items():
        for f in cls.option_fields():
            if f.metadata.get("cli"):
                offered.setdefault(f.name, (f, []))[1].append(name)
    group = p.add_argument_group("backend options", "each is taken by the backends it names")
    for field_name, (f, owners) in offered.items():
        flag = "--" + field_name.replace("_", "-")
        help_text = f"{f.metadata['help']} ({', '.join(owners)})"
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if kind.startswith("bool"):
            group.add_argument(flag, dest=BACKEND_OPTION + field_name, action="store_const",
                               const=True, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=BACKEND_OPTION + field_name, default=None,
                               type=positive_int if kind.startswith("int") else str,
                               metavar=field_name.upper(), help=help_text)


def backend_options(args) -> dict:
    """The backend options given on the command line (those left out keep the backend's own)."""
    return {dest[len(BACKEND_OPTION):]: value for dest, value in vars(args).items()
            if dest.startswith(BACKEND_OPTION) and value is not None}


def _restore_plan(args):
    """The plan, checked whole before anything is made: a usage error creates nothing."""
    from hinet_deploy.restore.plan import plan_jobs
    from hinet_deploy.restore.uri import is_uri

    uris = any(is_uri(text) for text in [*args.inputs, args.output])
    if uris and not args.ray:
        raise HinetDeployError("filesystem URIs (s3://, gs://, ...) are read and written by "
                               "the Ray workers: add --ray")
    plan = plan_jobs(args.inputs, args.output)
    if not is_uri(args.output):
        folder = Path(args.output).parent if plan.into_file else Path(args.output)
        return plan, (folder, "the folder of -o" if plan.into_file else "-o")
    return plan, None


def _video_options(args, plan):
    from hinet_deploy.runtime.video import VideoOptions, check_video_options

    video = VideoOptions(codec=args.codec, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt,
                         verbose=args.verbose)
    asked = args.codec is not None or args.pix_fmt or args.crf != VideoOptions.crf
    if asked or any(job.is_video for job in plan.jobs):  # images alone need no PyAV
        check_video_options(video)
    return video


def cmd_restore(args) -> int:
    from hinet_deploy.common.progress import say as log
    from hinet_deploy.restore.report import RestoreOptions, summary
    from hinet_deploy.runtime import Restorer

    from hinet_deploy.cli.args import named_checkpoint
    from hinet_deploy.export.shipped import DEMO_CHECKPOINT, DEMO_LIMITS

    args.model = named_checkpoint(args.model, DEMO_CHECKPOINT)
    input_file(args.model, "model")
    demo_note = args.model == DEMO_CHECKPOINT and not args.quiet
    if args.ray:
        from hinet_deploy.restore.cluster import reachable

        reachable(args.ray_address)  # seconds, not Ray's endless retries
    start = time.perf_counter()
    plan, folder = _restore_plan(args)
    video = _video_options(args, plan)
    extra = backend_options(args)
    max_pixels = None if args.max_megapixels is None else int(args.max_megapixels * 1e6)
    options = RestoreOptions(args.overwrite, args.quiet, args.jpeg_quality, video, max_pixels)
    restorer_options = {"backend": args.backend, "mode": args.mode, "tile": args.tile,
                        "overlap": args.overlap, "memory_budget_mb": args.memory_budget_mb}
    if args.ray:
        from hinet_deploy.restore.cluster import RayOptions, run_restore_ray

        if args.ray_address is None:  # local: a bad model is one line here, not in every actor
            Restorer(args.model, **restorer_options, **extra).close()
        if demo_note:  # once the model opened: without torch the demo is one error line alone
            log(DEMO_LIMITS)
        if folder is not None:
            writable_dir(*folder)
        ray_options = RayOptions(args.ray_address, args.workers, args.gpus_per_worker,
                                 args.threads_per_worker)
        report = run_restore_ray(plan, args.model, restorer_options, options, ray_options, log)
    else:
        from hinet_deploy.restore.local import run_restore

        with Restorer(args.model, on_tiling=log, **restorer_options, **extra) as restorer:
            if demo_note:
                log(DEMO_LIMITS)
            if folder is not None:
                writable_dir(*folder)  # once the model opened: a bad model creates nothing
            report = run_restore(plan, restorer, options, log)
    report.seconds = time.perf_counter() - start
    print(summary(report, plan, args.output))
    return 1 if report.failed else 0
