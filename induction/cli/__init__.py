"""The `induction` command line: one console script, one module per subcommand.

Each subcommand module defines `add_parser(subparsers, common)` and `run(args) -> int`: it turns the
arguments into its job's Config (`induction.jobs`; every default is read from the Config, never
restated here), calls the job and prints the report. Every subcommand takes --format, --out, --seed
and --quiet (the `common` parent parser); bad input ends with one line on stderr naming the problem
and a non-zero exit status, never a traceback (set INDUCTION_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from induction.cli import static
from induction.cli.options import Flags, add_options, config_default, field_docs, given  # noqa: F401 (re-exported)

FORMATS = static.constant("induction.reports.base:FORMATS")

# In pipeline order; a module that is not there yet is simply not offered.
COMMANDS = ("demo", "train", "scan", "track", "ablate", "patch", "fewshot", "bench", "sweep")
EXIT_USAGE = 2


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        raise CLIError(f"{self.prog}: {message}")


def common_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--format", choices=FORMATS, default="table", help="report format (default: table)")
    common.add_argument("--columns", metavar="NAME,...|all",
                        help="table columns, full names or short headers, or all (default: the ones that matter; "
                             "JSON and CSV keep every field)")
    common.add_argument("--style", choices=static.constant("induction.plots.style:STYLES"), default="screen",
                        help="figure style for --plot: screen (default) or paper (NeurIPS column width, 8 pt "
                             "text, colour-blind-safe scales; `induction.plots.FigureStyle`)")
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
    args = None
    _notes_to_stderr()
    try:
        args = build_parser().parse_args(argv)
        check_columns(args)
        return int(args.func(args) or 0)
    except CLIError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("induction: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every error reaches the user as one line
        if os.environ.get("INDUCTION_DEBUG"):
            raise
        return _fail(as_flags(_describe(exc), getattr(exc, "field", None), getattr(args, "field_flags", {})))


COMMON_FLAGS = {"device": "--device", "dtype": "--dtype", "checkpoint": "--checkpoint", "revision": "--revision",
                "revisions": "--revisions", "freqs": "--freqs", "text": "--text", "ray": "--ray", "job": "--job",
                "resume": "--resume", "offline": "--offline", "allow_pickle": "--allow-pickle"}
"""Fields that the options outside `add_options` set (the model and hardware arguments)."""


def as_flags(message: str, field: str | None, flags: Mapping[str, str]) -> str:
    """A library message in terms of this command's flags: library errors name config fields (the
    field an error is about first, other settings as ``field = value``), and only the CLI knows which
    flag sets each field (`flags`: field -> flag, gathered by `add_options`)."""
    flags = {**COMMON_FLAGS, **flags}
    for name, flag in flags.items():
        field_ = re.escape(name)
        message = re.sub(rf"\bleave {field_} = None\b", f"omit {flag}", message)  # an option not to give
        message = re.sub(rf"(?<![\w.-]){field_} ?= ?True\b", flag, message)  # a switch (allow_pickle=True too)
        message = re.sub(rf"(?<![\w.-]){field_} = ", f"{flag} ", message)
    if field in flags:
        message = re.sub(rf"^{re.escape(field)}\b", flags[field], message)
    return message


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _notes_to_stderr() -> None:
    """The library's notes (``induction.*`` loggers' warnings: a cache entry ignored and recomputed)
    go to stderr as one line each, whatever logging setup the process has."""
    logger = logging.getLogger("induction")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.setLevel(logging.WARNING)
        logger.addHandler(handler)
        logger.propagate = False


def check_columns(args: argparse.Namespace) -> None:
    """Turn --columns into full column names (or "all") before any work; a name the subcommand's report
    cannot have is an argument error (checked against `induction.reports.columns`, read from source)."""
    text = getattr(args, "columns", None)
    if text is None:
        return
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        args.columns = "all"
        return
    available = static.constant("induction.reports.columns:TABLE_COLUMNS").get(args.command)
    if available is None:
        raise CLIError(f"induction {args.command}: error: --columns: this command prints no table")
    by_header = static.constant("induction.reports.columns:HEADERS")
    known = {**{by_header.get(c, c): c for c in available}, **{c: c for c in available}}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise CLIError(f"induction {args.command}: error: --columns: unknown column {(unknown or [text])[0]!r}; "
                       f"choose from all, {', '.join(available)}")
    args.columns = tuple(dict.fromkeys(known[n] for n in names))


def _describe(exc: BaseException) -> str:
    import torch

    from induction.loading.models import ModelLoadError

    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    if isinstance(exc, torch.cuda.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in message):
        # Checked before the generic RuntimeError: the useful line is what to do, not the allocator's report.
        return ("out of GPU memory (" + message.split(". ")[0] + "); use a smaller --batch-size, --prompts or "
                "--sequences, a lower --dtype, or --device cpu")
    if isinstance(exc, MemoryError):
        return "out of memory on this machine; use a smaller --batch-size, --prompts or --sequences"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or message}"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename} does not exist; check the path"
    if isinstance(exc, OSError) and exc.errno in _OS_HINTS:
        where = exc.filename or "a file"
        return f"cannot use {where}: {exc.strerror or message}; {_OS_HINTS[exc.errno]}"
    if isinstance(exc, (ModelLoadError, ValueError, FileNotFoundError, RuntimeError)):
        return message  # in terms of fields: `main` says them as this command's flags (`as_flags`)
    return f"{type(exc).__name__}: {message}"


_OS_HINTS = {
    errno.EROFS: "the file system is read-only: choose a writable place (--out, the run or cache folder)",
    errno.ENOSPC: "the disk is full: free some space or write somewhere else",
    errno.EDQUOT: "the disk quota is used up: free some space or write somewhere else",
    errno.EISDIR: "it is a directory: name a file, or move the directory away",
    errno.ENOTDIR: "a part of the path is a file, not a directory: fix the path",
    errno.EEXIST: "something is already there: move it away or choose another path",
    errno.ENOTEMPTY: "the directory is not empty: move it away or choose another path",
    errno.ELOOP: "too many symbolic links: fix the link",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
    errno.EIO: "the device reported an I/O error: check the disk",
}
"""What to do about the OS errors a user can meet (one line each; PermissionError has its own)."""


def _fail(message: str) -> int:
    message = message.replace("\n", " ")
    if not message.startswith("induction"):
        message = f"induction: error: {message}"
    print(message, file=sys.stderr)
    return EXIT_USAGE


# ---- helpers shared by subcommands -------------------------------------------------------------

def emit(report: Any, args: argparse.Namespace) -> None:
    """Print the report in args.format, or write it to args.out (`induction.common.fileio.output_file`:
    atomically to a regular file or a link's target, in place to -, /dev/stdout or a device)."""
    from induction.reports.base import format_report, shown_columns

    text = format_report(report, args.format, columns=getattr(args, "columns", None))
    if args.format == "table" and getattr(args, "columns", None) is None:
        hidden = [c for c in report.columns if c not in shown_columns(report)]
        if hidden:
            import textwrap

            text += textwrap.fill(f"not shown: {', '.join(hidden)} (--columns all, or --columns NAME,...; JSON and CSV "
                                  "have every field)", width=100) + "\n"
    if args.out:
        from induction.common.fileio import write_output

        write_output(args.out, text)
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
    problem = _unwritable(path)
    if problem:
        raise CLIError(f"induction: error: --plot {plot}: {problem}")
    if path.suffix.lower() in STATIC_FORMATS:
        problem = static_export_problem()
        if problem:
            raise CLIError(f"induction: error: --plot {plot}: {problem}")


def save_plot(fig_fn: Callable[[], Any], args: argparse.Namespace) -> None:
    if not getattr(args, "plot", None):
        return
    from induction.plots import apply_style, save_figure

    save_figure(apply_style(fig_fn(), getattr(args, "style", None)), args.plot)
    if not args.quiet:
        print(f"wrote {args.plot}", file=sys.stderr)


def check_out_path(args: argparse.Namespace) -> None:
    out = getattr(args, "out", None)
    problem = _unwritable(Path(out)) if out else None
    if problem:
        raise CLIError(f"induction: error: --out {out}: {problem}")


def _unwritable(path: Path) -> str | None:
    """Why a report or figure could not be written to `path` (checked before any work), or None.
    Both are written as a temporary file beside where `path` leads (through links), then renamed
    onto it; a descriptor (-, /dev/stdout) or device is written in place."""
    from induction.common.fileio import OutputError, output_target

    try:
        target = output_target(path)
    except OutputError as exc:
        return str(exc).removeprefix(f"{path} ")
    if target.kind == "stream" and not os.access(target.path, os.W_OK):
        return f"cannot write to {target.path} (permission denied)"
    if target.kind != "file":
        return None
    path = target.path
    if not path.parent.is_dir():
        return f"directory {path.parent} does not exist"
    if path.is_dir():
        return "is a directory; name a file"
    import tempfile

    try:  # what the write will do; os.access says yes to root on read-only and special filesystems
        with tempfile.NamedTemporaryFile(prefix=f".{path.name}.", dir=path.parent):
            pass
    except OSError as exc:
        return f"cannot write in {path.parent} ({exc.strerror or exc})"
    return None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="run directory, checkpoint directory, or Hugging Face directory/name")
    parser.add_argument("--checkpoint", help="step of a run directory (default: last), or a published checkpoint")
    parser.add_argument("--revision", help="Hugging Face revision (e.g. Pythia step1000)")
    add_source_arguments(parser)
    add_device_arguments(parser)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """--offline and --allow-pickle (`induction.loading.hub`, `induction.loading.pickled`), for every
    subcommand that loads a model."""
    g = parser.add_argument_group("model source")
    g.add_argument("--offline", action="store_true",
                   help="never contact the Hugging Face hub: hub names must be in its cache (as HF_HUB_OFFLINE=1)")
    g.add_argument("--allow-pickle", action="store_true",
                   help="read weights that exist only as pytorch_model*.bin, with torch.load(weights_only=True) "
                        "(never any other pickle)")


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--device and --dtype (`induction.loading.devices`), for every subcommand that runs a model."""
    devices = static.constant("induction.loading.devices:DEVICES")
    dtypes = tuple(static.constant("induction.loading.devices:DTYPES"))
    g = parser.add_argument_group("hardware")
    g.add_argument("--device", default="auto", help=f"{'|'.join(devices)}: where the model runs "
                                                   "(default: auto, CUDA when available)")
    g.add_argument("--dtype", default="float32", choices=dtypes,
                   help="parameter precision; scores accumulate in float32 (default: float32)")


def add_ray_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="run one Ray task per checkpoint: no ADDRESS starts a local Ray runtime; auto, "
                             "HOST:PORT or ray://HOST:PORT joins a cluster (needs: pip install '.[ray]')")


def executor_from_args(args: argparse.Namespace, device: str | None = None):
    """The executor `--ray [ADDRESS]` asks for (this process without it); a context manager."""
    from induction.jobs.executor import LocalExecutor, RayExecutor

    if getattr(args, "ray", None) is None:
        return LocalExecutor()
    gpus = 1 if str(device or "").startswith("cuda") else 0
    return RayExecutor(None if args.ray == "local" else args.ray, gpus_per_task=gpus)


def run_job(args: argparse.Namespace, job: Callable[..., Any], target: Any, cfg: Any,
            plot: Callable[[Any], Any] | None = None) -> int:
    """What every subcommand does once its Config is built: check --out and --plot before any work,
    run the job, print (or write) its report, and write its figure."""
    check_out_path(args)
    check_plot_path(args)
    report = job(target, cfg, progress=not args.quiet)
    emit(report, args)
    if plot is not None:
        save_plot(lambda: plot(report), args)
    return 0


def config_from(cls: type, args: argparse.Namespace, flags: Flags, **fixed: Any) -> Any:
    """`cls(**given options, **fixed)`; a validation error names the option, not the field
    ("--prompts must be >= 1", not "n_prompts must be >= 1": `as_flags`)."""
    try:
        return cls(**given(args, flags), **fixed)
    except ValueError as exc:
        table = {name: spec if isinstance(spec, str) else spec[0] for name, spec in flags.items()}
        field = getattr(exc, "field", None)
        message = as_flags(str(exc), field, table)
        if field is None:  # a message that leads with the field it is about
            message = next((re.sub(rf"^{re.escape(n)}\b", f, message) for n, f in table.items()
                            if re.match(rf"^{re.escape(n)}\b", message)), message)
        raise CLIError(f"induction: error: {message}") from None


def one_of(what: str, allowed: tuple[str, ...]) -> Callable[[str], str]:
    """An argparse type for one name from `allowed`, with a one-line error naming the choices."""

    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; choose one of {', '.join(allowed)}")
        return text

    return parse


def comma_list(what: str, allowed: tuple[str, ...] | None = None, item: Callable[[str], Any] = str,
               minimum: int | None = None, sort: bool = False) -> Callable[[str], tuple]:
    """An argparse type for "a,b,c": items converted by `item`, checked against `allowed` (or `minimum`),
    no repeats (`sort` drops them and orders the rest); a one-line error otherwise."""

    def parse(text: str) -> tuple:
        names = [t.strip() for t in text.split(",") if t.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"no {what} given")
        try:
            values = [item(name) for name in names]
        except ValueError:
            kind = {"int": "integers", "float": "numbers"}.get(item.__name__, "values")
            raise argparse.ArgumentTypeError(f"{what} takes comma-separated {kind}, got {text!r}") from None
        for value in values:
            if allowed is not None and value not in allowed:
                raise argparse.ArgumentTypeError(f"unknown {what} {value!r}; choose from {', '.join(allowed)}")
            if minimum is not None and value < minimum:
                raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {text!r}")
        if sort:
            return tuple(sorted(set(values)))
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"{what} repeated in {text!r}")
        return tuple(values)

    return parse


def model_ref(args: argparse.Namespace):
    """The `ModelRef` the MODEL arguments name (loaded by the job, on --device in --dtype)."""
    from induction.loading.models import ModelRef

    return ModelRef(args.model, checkpoint=args.checkpoint, revision=args.revision, device=args.device,
                    dtype=args.dtype, offline=args.offline, allow_pickle=args.allow_pickle, progress=not args.quiet)


if __name__ == "__main__":
    sys.exit(main())
