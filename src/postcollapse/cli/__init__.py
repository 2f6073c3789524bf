"""Command-line interface: ``postcollapse COMMAND ...``.

Each command lives in its own module under ``postcollapse.cli`` that defines
``register(subparsers)``; ``register`` adds one or more sub-parsers and sets ``func`` on
them. Every module listed in ``COMMAND_MODULES`` is imported when the parser is built: one
that cannot be imported is an error, never a silently absent command. Command modules must
not import torch (or matplotlib) at module level, so that ``thresholds`` / ``optimum``
start fast.

Errors from the library (``ValueError``, ``TypeError``, ``OSError``) become one line on
stderr and exit status 2; there is never a traceback for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser", "COMMAND_MODULES"]

# Order is the order of ``postcollapse --help``.
COMMAND_MODULES = (
    "postcollapse.cli.theory_cmds",  # thresholds, optimum
    "postcollapse.cli.sweep_cmd",  # sweep
    "postcollapse.cli.locate_cmd",  # locate
    "postcollapse.cli.reproduce_cmd",  # reproduce
    "postcollapse.cli.diagnose_cmds",  # diagnose, effective-beta
)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as a single line (exit status 2); multi-line
    epilogs (examples) are printed as written."""

    def __init__(self, *args, **kwargs):
        from postcollapse.cli.helptext import HelpFormatter

        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="postcollapse",
        description="Predict, measure and explain posterior collapse in VAEs.",
    )
    from postcollapse import __version__

    parser.add_argument("--version", action="version", version=f"postcollapse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, EOFError) as exc:
        print(f"postcollapse {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError as exc:  # a last line of defence; readers refuse huge headers first
        detail = f" ({_one_line(exc)})" if str(exc) else ""
        print(f"postcollapse {args.command}: error: out of memory{detail}; use smaller "
              "data, a memory-mapped .npy, or a machine with more memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"postcollapse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
