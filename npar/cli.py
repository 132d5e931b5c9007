"""The ``npar`` command line (also ``python -m npar``).

Each sub-command lives in a module of :mod:`npar.commands` with two
functions: ``add_parser(subparsers)`` and ``run(args) -> exit status``.
"""

import argparse
import importlib
import logging
import os
import sys

from npar._version import __version__

# Modules of npar.commands, in the order ``npar --help`` lists them.
COMMAND_MODULES = [
    "train",
    "eval",
    "sample",
    "generate",
    "gradcheck",
    "exercise",
    "verify",
    "export",
]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="npar",
        description="Hand-written PixelCNN, Gated PixelCNN and WaveNet in "
        "NumPy/Numba: train, evaluate, sample and verify.",
    )
    parser.add_argument("--version", action="version", version=f"npar {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"npar.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"npar.commands.{name}":
                raise
            continue
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (npar gradcheck --list | head):
        # stop quietly, and keep Python from complaining again at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a real file
            pass
        return 141
    except (ValueError, TypeError, OSError, FloatingPointError, ImportError,
            MemoryError) as error:
        # OSError: a file that cannot be read or written (a folder, no
        # permission, a full disk); ImportError: an optional extra missing;
        # MemoryError: an option asked for more than the machine holds.
        print(f"npar {args.command}: error: {error}", file=sys.stderr)
        return 1
