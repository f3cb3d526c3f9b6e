"""The ``llmsparse`` command. Each sub-command lives in its own module with ``register(app)``;
errors are formatted here, in one place: one line, exit code 2, no traceback unless
``LLMSPARSE_DEBUG=1``."""
from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(
    name="llmsparse",
    help="One-shot compression of Hugging Face causal LMs: prune (magnitude, Wanda, SparseGPT, DSnoT; "
    "unstructured or N:M), slice, evaluate, export, benchmark.\n\n"
    "N:M means at most N nonzero weights in every M consecutive weights along the input dimension "
    "(NVIDIA's convention: 2:4 keeps 2 of every 4).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)



@app.callback()
def _root() -> None:
    """llmsparse: prune, slice, evaluate, export and benchmark causal LMs."""


COMMAND_MODULES = ("prune", "eval", "info", "slice", "export", "bench", "run")

for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"llmsparse.cli.{_name}")
    except ModuleNotFoundError as _e:  # a command whose module is not there yet
        if _e.name != f"llmsparse.cli.{_name}":
            raise
        continue
    _mod.register(app)


def main(argv: list[str] | None = None) -> int:
    try:  # typer >= 0.20 vendors click as typer._click
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover
        from click import exceptions as cx

    from ..errors import UserError

    debug = os.environ.get("LLMSPARSE_DEBUG") == "1"
    no_args_help = getattr(cx, "NoArgsIsHelpError", ())
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="llmsparse")
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        rv = 130
    except typer.Exit as e:
        rv = getattr(e, "exit_code", 0)
    except no_args_help as e:  # type: ignore[misc]
        print(e.format_message() if hasattr(e, "format_message") else str(e), file=sys.stderr)
        return 2
    except cx.UsageError as e:
        if debug:
            raise
        ctx = getattr(e, "ctx", None)
        cmd = ctx.command_path if ctx is not None else "llmsparse"
        print(f"error: {e.format_message()} (see '{cmd} --help')", file=sys.stderr)
        return 2
    except cx.ClickException as e:
        if debug:
            raise
        print(f"error: {e.format_message()}", file=sys.stderr)
        return 2
    if rv == 130:  # Ctrl-C: raised here, or turned by typer into Exit(130) / a return value of 130
        print("error: interrupted; nothing was written", file=sys.stderr)
    return rv if isinstance(rv, int) else 0


def entry() -> None:  # console script
    sys.exit(main())
