"""`dkl4dstem run | reconstruct | demo`. Bad input: one line on stderr and exit code 2, never a traceback.

parser.py has the flags, options.py turns them into the experiment's config, run.py runs (run, demo),
reconstruct.py reconstructs, signals.py handles Ctrl-C. Nothing here imports torch before a run starts.
"""
from __future__ import annotations

import os
import sys

from dkl4dstem.cli import parser, reconstruct, run
from dkl4dstem.errors import InputError

build_parser = parser.build_parser


def main(argv: list[str] | None = None) -> int:
    args = parser.build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        os.environ["DKL4DSTEM_THREADS"] = str(args.threads)  # applied when torch is first used
    commands = {"run": run.cmd_run, "reconstruct": reconstruct.cmd_reconstruct, "demo": run.cmd_demo}
    try:
        return commands[args.command](args)
    except InputError as exc:
        print(f"dkl4dstem: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dkl4dstem: aborted; every measured point is in session.h5", file=sys.stderr)
        return 130
    except Exception as exc:  # never a bare traceback for the user; --debug shows it
        if args.debug:
            raise
        print(f"dkl4dstem: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
              file=sys.stderr)
        return 1
