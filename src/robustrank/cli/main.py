"""The root ``robustrank`` app: every command attached in one table, the ``--debug``
option and :func:`main`, the console-script entry point (errors as one line)."""

from __future__ import annotations

import os
import sys

import typer

from ..allocator import keep_freed_memory
from . import analysis, certify, data, evaluate, listing, reproduce, structure, sweep, train

__all__ = ["app", "main", "DEBUG_ENV"]

DEBUG_ENV = "ROBUSTRANK_DEBUG"

app = typer.Typer(
    help="robustrank: low-rank and sparse weights vs. adversarial robustness.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # help is plain text: "robustrank[ray]" is not a style tag
)

# name -> command, in the order of `robustrank --help`; then the sub-apps
COMMANDS = {
    "models": listing.models_cmd,
    "attacks": listing.attacks_cmd,
    "optimizers": listing.optimizers_cmd,
    "schedules": listing.schedules_cmd,
    "objectives": listing.objectives_cmd,
    "pruning": listing.pruning_cmd,
    "info": analysis.info_cmd,
    "evaluate": evaluate.evaluate_cmd,
    "diagnose": evaluate.diagnose_cmd,
    "curve": evaluate.curve_cmd,
    "certify": certify.certify_cmd,
    "train": train.train_cmd,
    "compress": structure.compress_cmd,
    "presets": listing.presets_cmd,
    "theory": analysis.theory_cmd,
    "analyze": analysis.analyze_cmd,
    "reproduce": reproduce.reproduce_cmd,
    "budgets": reproduce.budgets_cmd,
}
SUB_APPS = {"sweep": sweep.app, "data": data.app}

for _name, _command in COMMANDS.items():
    app.command(_name)(_command)
for _name, _sub_app in SUB_APPS.items():
    app.add_typer(_sub_app, name=_name)


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help=f"show the traceback of an error (or set {DEBUG_ENV}=1)"
    ),
) -> None:
    """robustrank: low-rank and sparse weights vs. adversarial robustness."""
    if debug:
        os.environ[DEBUG_ENV] = "1"


def _error_line(err: BaseException) -> str:
    """One line naming an unexpected error and what to do about it."""
    if isinstance(err, OSError):
        where = f" ({err.filename})" if err.filename else ""
        return (
            f"{err.strerror or err}{where}; check the path, its permissions and the free disk "
            "space (interrupted work resumes when the same command is run again)"
        )
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text or 'no message'} (run with --debug for the traceback)"


def main(argv: list[str] | None = None) -> None:
    """The ``robustrank`` entry point: errors as one line with exit code 2, the traceback
    only with ``--debug`` (anywhere on the command line) or ``ROBUSTRANK_DEBUG=1``; glibc
    keeps freed memory for reuse in this process and the ones it starts
    (:func:`robustrank.allocator.keep_freed_memory`)."""
    keep_freed_memory()  # freed tensor memory stays for reuse (robustrank.allocator)
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        args = ["--debug", *(a for a in args if a != "--debug")]
    try:
        app(args, standalone_mode=True)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 - the last line of defence for users
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        typer.secho(f"error: {_error_line(err)}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
