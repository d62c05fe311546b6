"""What every subcommand's arguments share: argparse types, the subcommand maker with examples,
the checkpoint a command is given, and the INT8 options of build and fidelity."""
from __future__ import annotations

import argparse
from pathlib import Path

from hinet_deploy.build.calibration import (DEFAULT_MEASURE_COUNT, DEFAULT_MEASURE_CROP,
                                            DEFAULT_TARGET_DB)
from hinet_deploy.build.nncf_model import OPENVINO_TARGET_DB
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.files import input_file
from hinet_deploy.export.precision import (CALIBRATION_METHODS, DEFAULT_CALIBRATION,
                                           DEFAULT_FLOAT_LAYERS)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, refused in one line otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not above 0")
    return value


def quality(text: str) -> int:
    """An argparse type: an encoder quality of 1 to 100 (JPEG, WebP)."""
    value = positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"{value} is not a quality of 1 to 100")
    return value


def noise_level(text: str) -> float:
    """An argparse type: a noise sigma on the 0-255 scale, 0 or more."""
    value = _number(text)
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"{value:g} is not a noise level (0 to 255)")
    return value


COMMON = argparse.ArgumentParser(add_help=False)
COMMON.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def command(sub, name: str, summary: str, *examples: str):
    """A subcommand whose --help ends with examples."""
    epilog = "examples:\n" + "\n".join(f"  hinet-deploy {name} {e}".rstrip() for e in examples)
    return sub.add_parser(name, parents=[COMMON], help=summary, description=summary,
                          epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)


def named_checkpoint(arg: Path | None, demo: Path) -> Path | None:
    """The checkpoint the user named; the shipped demo model only when named `demo`."""
    return demo if arg is not None and str(arg) == "demo" else arg


def checkpoint_or_demo(arg: Path | None) -> Path:
    """For the checking commands (validate, bench, fidelity): the demo model unless one is named."""
    from hinet_deploy.export.shipped import DEMO_CHECKPOINT

    return input_file(named_checkpoint(arg, DEMO_CHECKPOINT) or DEMO_CHECKPOINT, "checkpoint")


def share(text: str) -> float:
    """An argparse type: a share of a whole, `0.05` or `5%`, above 0 and at most 1."""
    value = _number(text[:-1]) / 100 if text.endswith("%") else _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share above 0 and at most 1 (or 100%)")
    return value


def add_int8_options(p):
    p.add_argument("--calib-method", choices=CALIBRATION_METHODS, default=DEFAULT_CALIBRATION,
                   help=f"INT8 calibration (default {DEFAULT_CALIBRATION}: best on the demo model)")
    p.add_argument("--float-layers", nargs="*", default=None,
                   help=f"INT8: modules kept in float (default: {' '.join(DEFAULT_FLOAT_LAYERS)}; "
                        f"none for all-INT8; `auto` chooses them by measurement, see "
                        f"`hinet-deploy sensitivity`)")
    add_choice_options(p, "with --float-layers auto: ")
    p.add_argument("--measure-images", type=Path, default=None,
                   help="with --float-layers auto: images the choice is measured on, never the "
                        "calibration images (default: the shipped held-out photographs)")
    p.add_argument("--measure-count", type=positive_int, default=None,
                   help=f"with --float-layers auto: measurement crops (default "
                        f"{DEFAULT_MEASURE_COUNT}; `sensitivity --count`)")
    p.add_argument("--measure-crop", type=positive_int, default=None,
                   help=f"with --float-layers auto: measurement crop size (default "
                        f"{DEFAULT_MEASURE_CROP}; `sensitivity --crop`)")


def add_choice_options(p, prefix: str = ""):
    p.add_argument("--target-db", type=positive_float, default=None,
                   help=f"{prefix}add float layers until INT8 is this close to FP32 (PSNR; default "
                        f"{DEFAULT_TARGET_DB:g}, {OPENVINO_TARGET_DB:g} with --openvino, unless a "
                        f"budget is given)")
    p.add_argument("--float-macs-budget", type=share, default=None,
                   help=f"{prefix}share of the network's MACs allowed in float (0.05 or 5%%)")


def calib_options(args, **extra):
    from hinet_deploy.build.calibration import AutoFloat, CalibOptions, MeasureOptions

    calib = CalibOptions(method=args.calib_method, **extra)
    auto = args.float_layers is not None and "auto" in args.float_layers
    if auto and len(args.float_layers) > 1:
        raise HinetDeployError("--float-layers auto chooses every float layer; name none beside it")
    measure = {"folder": args.measure_images, "count": args.measure_count,
               "crop": args.measure_crop}
    if not auto and (args.target_db is not None or args.float_macs_budget is not None
                     or any(v is not None for v in measure.values())):
        raise HinetDeployError("--target-db, --float-macs-budget and --measure-* are for "
                               "--float-layers auto")
    if args.measure_images is not None and not args.measure_images.is_dir():
        raise HinetDeployError(f"--measure-images {args.measure_images} is not a folder")
    if auto:
        calib.auto = AutoFloat(args.target_db, args.float_macs_budget,
                               MeasureOptions(**{k: v for k, v in measure.items()
                                                 if v is not None}))
    elif args.float_layers is not None:
        calib.float_layers = tuple(args.float_layers)
    return calib


def size_type(text: str) -> tuple[int, int]:
    """An argparse type: WIDTHxHEIGHT -> (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT") from exc
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size {text!r}: a side is not at least 1")
    return height, width
