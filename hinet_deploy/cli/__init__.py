"""`hinet-deploy <subcommand>`: the one CLI, thin (parse, call, print): a module per room
(`restore`, `build` for export and build, `checks`, `demo`); export/to_onnx.py and build_trt.py call
the same main().

Errors a user can cause print as one line and exit 2; --debug shows the traceback instead.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys

from hinet_deploy.cli import build, checks, demo, restore
from hinet_deploy.common.errors import HinetDeployError
from hinet_deploy.common.lazy import missing_module_message

_WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM}


def build_parser() -> argparse.ArgumentParser:
    from hinet_deploy import __version__

    parser = argparse.ArgumentParser(
        prog="hinet-deploy", description="HINet from checkpoint to verified ONNX graphs and TensorRT "
        "engines, and restoring photos and videos with them. `hinet-deploy COMMAND --help` for a "
        "command's options and examples.")
    parser.add_argument("--version", action="version", version=f"hinet-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (restore.add_restore, build.add_export, build.add_stand_in, checks.add_macs,
                checks.add_claims, demo.add_demo, build.add_build, checks.add_fidelity,
                checks.add_sensitivity,                 checks.add_validate, checks.add_bench):
        add(sub)
    return parser


def main(argv=None, parser: argparse.ArgumentParser | None = None) -> int:
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ModuleNotFoundError as exc:
        line = missing_module_message(exc.name or "", f"`hinet-deploy {args.command}`")
        if line is None or args.debug:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    except HinetDeployError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Every output's temporary file was removed while the interrupt unwound the stack. End
        # here, without the interpreter's shutdown: a worker thread may still be inside ONNX
        # Runtime or PyTorch, whose thread pools abort the process (exit 134, "terminate called
        # without an active exception") when torn down under it.
        print("interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    except OSError as exc:  # the disk, not the program: full, read-only, gone
        if args.debug or exc.filename is None:
            raise
        print(f"error: cannot {'write' if exc.errno in _WRITE_ERRNOS else 'use'} {exc.filename}: "
              f"{exc.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
