"""The ``bronchonav`` command line.

Each sub-command lives in a module of this package whose name ends in ``_cmd`` and that defines
``register(subparsers)``: it adds its parser and sets ``func`` to a callable taking the parsed
arguments and returning an exit code. Heavy imports stay inside those callables so that
``bronchonav --help`` is fast.

Options are checked while parsing (types in :mod:`bronchonav.cli.options`: bounds, finite
numbers, writable outputs), before any work starts. A bad option, and every error a user can
cause (:class:`bronchonav.errors.BronchoNavError`), is printed as one line on stderr with exit
code 2. Set ``BRONCHONAV_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys

from bronchonav.errors import BronchoNavError


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``PROG: error: MESSAGE (see PROG --help)``)
    and exit code 2; sub-command parsers are of the same class."""

    def parse_known_args(self, args=None, namespace=None):
        """Parse, recording in ``_prog`` the prog of the deepest sub-command (for messages)."""
        namespace, rest = super().parse_known_args(args, namespace)
        if not hasattr(namespace, "_prog"):
            namespace._prog = self.prog
        return namespace, rest

    def error(self, message: str):
        """Print the one-line error and exit with code 2."""
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every ``*_cmd`` module's sub-command registered."""
    import bronchonav

    parser = OneLineParser(
        prog="bronchonav",
        description="BronchoNav: a digital twin for robotic bronchoscopy (SI units, CT frame).")
    parser.add_argument("--version", action="version", version=f"bronchonav {bronchonav.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.endswith("_cmd"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad option (already reported)
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BronchoNavError as exc:
        if os.environ.get("BRONCHONAV_DEBUG"):
            raise
        message = " ".join(str(exc).split())  # always one line
        print(f"{args._prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{args._prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (``bronchonav map-info ... | head``): stop writing, no traceback;
        # stdout goes to /dev/null so that the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by the broken pipe


def run() -> None:
    """Console-script entry point. SIGTERM (``kill``, ``timeout``, a service manager) stops a
    command as Ctrl-C does: its clean-up runs (child processes stopped, files finished or left
    as they were; a campaign keeps its rows, and a rerun resumes)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    code = main()
    if "rclpy" in sys.modules:
        # ROS ran in this process (the demo's nodes) and the command has cleaned up after it;
        # end as the node processes do, without the interpreter's finalization, whose teardown
        # of rclpy's C++ objects can abort (seen once: SIGTERM to `bronchonav demo` while its
        # nodes were being built, "terminate called without an active exception", status -6
        # instead of 130)
        from bronchonav.ros.runner import exit_without_finalization

        exit_without_finalization(code)
    sys.exit(code)
