"""`hinet-deploy demo`."""
from __future__ import annotations

from pathlib import Path

from hinet_deploy.cli.args import command
from hinet_deploy.common.files import DEFAULT_OUTPUT_DIR, input_file, writable_dir


def add_demo(sub):
    p = command(sub, "demo", "export the demo denoiser and restore held-out noisy photos",
                 "", "--image my_photo.png", "-o /tmp/demo --seed 3")
    p.add_argument("-o", "--out-dir", type=Path, default=DEFAULT_OUTPUT_DIR / "demo",
                   help=f"folder for the graph and images (default {DEFAULT_OUTPUT_DIR}/demo)")
    p.add_argument("--image", type=Path, default=None,
                   help="a clean 8-bit photo of your own to add noise to and restore")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from hinet_deploy.demo.run import format_rows, run_demo

    if args.image is not None:
        input_file(args.image, "image")
    writable_dir(args.out_dir, "-o")
    print(f"hinet-deploy demo -> {args.out_dir}")
    rows = run_demo(args.out_dir, args.image, args.seed)
    print(format_rows(rows))
    from hinet_deploy.demo.run import demo_image_name

    names = [demo_image_name(kind, args.image) for kind in ("clean", "noisy", "restored")]
    print(f"images: {args.out_dir / demo_image_name('side_by_side', args.image)} (noisy | "
          f"restored | clean) and {', '.join(names)} for {rows[0].image}")
    graph = args.out_dir / "hinet-demo-denoise.onnx"
    print(f"restore your own photos and videos with the graph it wrote: hinet-deploy restore "
          f"YOUR_FILES -o restored/ --model {graph}")
    return 0
