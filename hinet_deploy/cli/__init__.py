"""`hinet-deploy <subcommand>`: the one CLI, thin (parse, call, print): a module per room
(`restore`, `build` for export and build, `checks`, `demo`); export/to_onnx.py and build_trt.py call
the same main().

Errors a user can cause print as one line and exit 2; --debug shows the traceback instead.
"""
from __future__ import annotations

import argparse
import codecs
import errno
import os
import signal
import sys
import threading

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


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP (what `timeout`, `docker stop`, systemd and Kubernetes send, and a closed
    terminal), raised in the main thread as Ctrl-C is: temporary files are removed as it unwinds."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_signalled(signum, frame):
    raise Signalled(signum)


def _take_signals() -> None:
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                signal.signal(signum, _raise_signalled)


def _name_escape(error: UnicodeEncodeError):
    """File names that are not UTF-8 reach Python as lone surrogates (PEP 383): shown as their
    bytes, \\xNN, as `ls -b` does, rather than crashing the summary after all the work."""
    text = error.object[error.start:error.end]
    shown = "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else
                    c.encode("ascii", "backslashreplace").decode() for c in text)
    return shown, error.end


codecs.register_error("hinet-deploy-names", _name_escape)


def _safe_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="hinet-deploy-names")


def main(argv=None, parser: argparse.ArgumentParser | None = None) -> int:
    _safe_output()
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    _take_signals()
    try:
        return args.func(args)
    except ModuleNotFoundError as exc:
        from hinet_deploy.runtime.backends import optional_dependencies

        line = missing_module_message(exc.name or "", f"`hinet-deploy {args.command}`",
                                      optional_dependencies())
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
        signum = getattr(sys.exc_info()[1], "signum", signal.SIGINT)
        print("interrupted" if signum == signal.SIGINT else
              f"stopped by {signal.Signals(signum).name}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)
    except OSError as exc:  # the disk, not the program: full, read-only, gone
        if args.debug or exc.filename is None:
            raise
        print(f"error: cannot {'write' if exc.errno in _WRITE_ERRNOS else 'use'} {exc.filename}: "
              f"{exc.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
