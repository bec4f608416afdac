"""The ``ragqa`` command: a thin skin over the library. Each command parses, calls one library
function, prints; the commands live by group in ``cli_index``, ``cli_eval``, ``cli_answer``,
``cli_bench`` and ``train_cli`` (shared options and helpers: ``common``). Library errors become
one line on stderr here, in ``main``; a traceback is shown only with ``--debug`` (or
RAGQA_DEBUG=1)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ragqa.apps.common import app, bench_app, err
from ragqa.apps.train_cli import bench_train_command, data_app, train_command
from ragqa.errors import RagqaError

app.add_typer(data_app, name="data")
app.command("train")(train_command)
bench_app.command("train")(bench_train_command)

from ragqa.apps import cli_index, cli_eval, cli_answer, cli_serve, cli_bench  # noqa: E402,F401  (register, in this order)

@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    if debug:
        os.environ["RAGQA_DEBUG"] = "1"


def main(argv: list[str] | None = None) -> int:
    import click
    from typer.exceptions import TyperException

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("RAGQA_DEBUG") == "1"
    if not debug:
        import warnings

        warnings.filterwarnings("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars follow it
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        code = typer.main.get_command(app).main(argv, prog_name="ragqa", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except (click.exceptions.Exit, typer.Exit) as exc:
        return exc.exit_code
    except (click.exceptions.Abort, typer.Abort):
        err("aborted")
        return 130
    except (click.ClickException, TyperException) as exc:  # typer >= 0.2x raises its vendored click's
        exc.show()
        return exc.exit_code
    except RagqaError as exc:
        if debug:
            raise
        err(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        err("interrupted; the index was left as it was before this run")
        return 130
    except Exception as exc:  # noqa: BLE001 - one readable line, traceback only with --debug
        if debug:
            raise
        err(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
