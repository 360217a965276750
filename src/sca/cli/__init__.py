"""The `sca` command: one module per command, each adding its parser (`add`) and running it (`run`)."""

from __future__ import annotations

import os
import sys

from ..errors import InputError, one_line
from ..options import PRECISIONS
from . import anything, bench, caption, evaluate, infer, serve, train, video
from .common import Parser, attach_negative_values
from .config import CONFIG_DIR, compose_config

__all__ = ["CONFIG_DIR", "PRECISIONS", "build_parser", "compose_config", "main"]
COMMANDS = (caption, anything, video, serve, train, infer, evaluate, bench)


def build_parser() -> Parser:
    parser = Parser(prog="sca", description="Segment and Caption Anything")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add(commands)
    return parser


def _quiet_libraries() -> None:
    """Our own progress bars and errors are what a user should see, not per-weight loading bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = "sca"
    try:
        args = build_parser().parse_args(attach_negative_values(sys.argv[1:] if argv is None else list(argv)))
        command = f"sca {args.command}"
        _quiet_libraries()
        return args.run(args)
    except InputError as error:
        print(f"{command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

