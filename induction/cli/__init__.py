"""The `induction` command line: one console script, one module per subcommand.

Each subcommand module defines `add_parser(subparsers, common)` and `run(args) -> int`. Every
subcommand takes --format, --out, --seed and --quiet (the `common` parent parser); bad input ends with
one line on stderr naming the problem and a non-zero exit status, never a traceback (set
INDUCTION_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any, Callable

from induction.report import FORMATS, format_report

# In pipeline order; a module that is not there yet is simply not offered.
COMMANDS = ("demo", "train", "scan", "track", "ablate", "patch", "fewshot")
EXIT_USAGE = 2


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        raise CLIError(f"{self.prog}: {message}")


def common_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--format", choices=FORMATS, default="table", help="report format (default: table)")
    common.add_argument("--out", metavar="FILE", help="write the report to FILE instead of stdout")
    common.add_argument("--seed", type=int, default=0, help="seed for prompts, sampling and training (default: 0)")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="induction", description="Find, score and causally test induction heads.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    common = common_parser()
    for name in COMMANDS:
        module = _command_module(name)
        if module is not None:
            module.add_parser(sub, common)
    return parser


def _command_module(name: str):
    try:
        return importlib.import_module(f"induction.cli.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"induction.cli.{name}":
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status (tests call it in-process)."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except CLIError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("induction: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every error reaches the user as one line
        if os.environ.get("INDUCTION_DEBUG"):
            raise
        return _fail(_describe(exc))


def _describe(exc: BaseException) -> str:
    from induction.models import ModelLoadError

    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    if isinstance(exc, (ModelLoadError, ValueError, FileNotFoundError, PermissionError, RuntimeError)):
        return message
    return f"{type(exc).__name__}: {message}"


def _fail(message: str) -> int:
    message = message.replace("\n", " ")
    if not message.startswith("induction"):
        message = f"induction: error: {message}"
    print(message, file=sys.stderr)
    return EXIT_USAGE


# ---- helpers shared by subcommands -------------------------------------------------------------

def emit(report: Any, args: argparse.Namespace) -> None:
    """Print the report in args.format, or write it to args.out (atomically)."""
    text = format_report(report, args.format)
    if args.out:
        from induction.fileio import write_text_atomic

        write_text_atomic(Path(args.out), text)
        if not args.quiet:
            print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def check_plot_path(args: argparse.Namespace) -> None:
    """Fail before any work when --plot names a format or place we cannot write."""
    plot = getattr(args, "plot", None)
    if not plot:
        return
    from induction.plots import FIGURE_FORMATS, STATIC_FORMATS, static_export_problem

    path = Path(plot)
    if path.suffix.lower() not in FIGURE_FORMATS:
        raise CLIError(f"induction: error: --plot {plot}: use one of {', '.join(FIGURE_FORMATS)}")
    if not path.parent.exists():
        raise CLIError(f"induction: error: --plot {plot}: directory {path.parent} does not exist")
    if path.suffix.lower() in STATIC_FORMATS:
        problem = static_export_problem()
        if problem:
            raise CLIError(f"induction: error: --plot {plot}: {problem}")


def save_plot(fig_fn: Callable[[], Any], args: argparse.Namespace) -> None:
    if not getattr(args, "plot", None):
        return
    from induction.plots import save_figure

    save_figure(fig_fn(), args.plot)
    if not args.quiet:
        print(f"wrote {args.plot}", file=sys.stderr)


def check_out_path(args: argparse.Namespace) -> None:
    out = getattr(args, "out", None)
    if out and not Path(out).parent.exists():
        raise CLIError(f"induction: error: --out {out}: directory {Path(out).parent} does not exist")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="run directory, checkpoint directory, or Hugging Face directory/name")
    parser.add_argument("--checkpoint", help="step of a run directory (default: last), or a published checkpoint")
    parser.add_argument("--revision", help="Hugging Face revision (e.g. Pythia step1000)")


def load_model_from_args(args: argparse.Namespace):
    from induction.models import load_model

    return load_model(args.model, checkpoint=args.checkpoint, revision=args.revision)


if __name__ == "__main__":
    sys.exit(main())
