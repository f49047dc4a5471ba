"""``python -m analysis.bench NAME ...``: one subcommand per benchmark module (``COMMANDS``)."""
from __future__ import annotations

import argparse
import sys

from . import gpu, pretraining, probing, scan, shapes, threads

COMMANDS = {"gpu": gpu, "paper-shapes": shapes, "scan": scan, "directprobe": probing, "threads": threads,
            "pretrain": pretraining}


def main(argv=None) -> int:
    """Parse ``argv`` (default: the command line) and run the chosen benchmark: its exit code."""
    parser = argparse.ArgumentParser(prog="python -m analysis.bench",
                                     description="Benchmarks: performance targets are measured here, "
                                                 "never asserted in tests.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP))
    args = parser.parse_args(argv)
    return COMMANDS[args.command].command(args)


if __name__ == "__main__":
    sys.exit(main())
