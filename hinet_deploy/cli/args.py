"""What every subcommand's arguments share: argparse types, the subcommand maker with examples,
the checkpoint a command is given, and the INT8 options of build and fidelity."""
from __future__ import annotations

import argparse
from pathlib import Path

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
    from hinet_deploy.export.variants import DEMO_CHECKPOINT

    return input_file(named_checkpoint(arg, DEMO_CHECKPOINT) or DEMO_CHECKPOINT, "checkpoint")


def add_int8_options(p):
    p.add_argument("--calib-method", choices=CALIBRATION_METHODS, default=DEFAULT_CALIBRATION,
                   help=f"INT8 calibration (default {DEFAULT_CALIBRATION}: best on the demo model)")
    p.add_argument("--float-layers", nargs="*", default=None,
                   help=f"INT8: module prefixes kept in float (default: "
                        f"{' '.join(DEFAULT_FLOAT_LAYERS)}; give none for all-INT8)")


def calib_options(args, **extra):
    from hinet_deploy.build.flow import CalibOptions

    calib = CalibOptions(method=args.calib_method, **extra)
    if args.float_layers is not None:
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
