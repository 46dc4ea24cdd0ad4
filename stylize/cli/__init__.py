"""The command line: a thin Typer layer over :mod:`stylize.api` and :mod:`stylize.training`.

This package is the only place that prints or exits. :func:`main` turns a :class:`~stylize.errors.StylizeError` into
a one-line ``error: ...`` (its API parameter names shown as this CLI's flags) and its exit code, and shows a traceback
only with ``stylize --debug ...`` (or ``STYLIZE_DEBUG=1``).
"""

from __future__ import annotations

import atexit
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

try:  # typer >= 0.22 vendors click as typer._click; older releases use click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions

from stylize import __version__
from stylize.cli import apply, export, info, serve, sheet, train
from stylize.errors import EXIT_BAD_INPUT, EXIT_FAILURE, StylizeError, as_flags

app = typer.Typer(
    name="stylize",
    help="Fast neural style transfer: apply a style model to photos, train new styles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
_debug = {"on": os.environ.get("STYLIZE_DEBUG") == "1"}


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"stylize {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error (also STYLIZE_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
) -> None:
    if debug:
        _debug["on"] = True


for _module in (apply, sheet, serve, info, train, export):
    _module.register(app)


def debug_on() -> bool:
    """Whether ``--debug`` (or ``STYLIZE_DEBUG=1``) asked for tracebacks."""
    return _debug["on"]


def report_error(message: str) -> None:
    # escape: a file name such as "[draft] a.jpg" is text, not Rich markup
    stderr.print(f"[bold red]error:[/bold red] {escape(message)}", markup=True, highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``stylize`` console script and of ``python -m stylize``."""
    from stylize.runtime import prepare_process

    _debug["on"] = os.environ.get("STYLIZE_DEBUG") == "1"
    prepare_process()  # before torch is imported: keep freed memory, bounded OpenMP spin-waiting (stylize/runtime.py)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=args, prog_name="stylize", standalone_mode=False)
    except StylizeError as exc:
        if _debug["on"]:
            raise
        report_error(as_flags(exc.marked_line()))
        sys.exit(exc.exit_code)
    except click_exceptions.NoArgsIsHelpError:
        app(args=["--help"], prog_name="stylize", standalone_mode=False)
        sys.exit(0)
    except click_exceptions.UsageError as exc:
        if _debug["on"]:
            raise
        command = exc.ctx.command_path if exc.ctx else "stylize"
        report_error(f"{exc.format_message()} (see '{command} --help')")
        sys.exit(EXIT_BAD_INPUT)
    except (typer.Abort, KeyboardInterrupt):  # typer.Abort is click's Abort; the vendored click has no other
        report_error("interrupted")
        sys.exit(130)
    except typer.Exit as exc:  # the vendored click has no Exit of its own; typer.Exit is it
        sys.exit(exc.exit_code)
    except click_exceptions.ClickException as exc:
        report_error(exc.format_message())
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users without --debug
        if _debug["on"]:
            raise
        report_error(f"unexpected {type(exc).__name__}: {exc} (run again as 'stylize --debug ...' for the traceback and report it)")
        sys.exit(EXIT_FAILURE)
    if isinstance(code, int) and code:
        sys.exit(code)


def run() -> None:
    """The ``stylize`` console script and ``python -m stylize``: :func:`main`, then a quick exit of the process."""
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    exit_process(code)


def exit_process(code: int | str | None) -> None:
    """Leave the process the way ``sys.exit(code)`` would, but without tearing the interpreter down.

    Unloading torch's modules and C++ state took 0.6-0.7 s after every command on a 2-core CPU (0.74 s from the last
    output of an 80-photo folder run to the process's end, 0.13 s this way). Everything registered to run at exit
    still runs (``atexit`` handlers and ``weakref.finalize``, which remove temporary folders) and the standard streams
    are flushed; what is skipped is freeing memory that the OS reclaims anyway. Only for the process's own entry
    points: a program that calls :func:`main` keeps its interpreter.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message") prints the message and exits with 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said anyway
            pass
    os._exit(status)
