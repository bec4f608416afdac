"""What every command shares: the ``ragqa`` app and its command groups, the common options,
settings, messages and progress bars (the command modules ``cli_*`` and ``train_cli`` import
this; ``cli`` assembles them and runs ``main``)."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:  # the settings (pydantic) load with the first command that needs them
    from ragqa.config import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Offline retrieval-augmented question answering over your documents.")
index_app = typer.Typer(no_args_is_help=True, help="Build, update, inspect and verify an index.")
bench_app = typer.Typer(invoke_without_command=True, help="Benchmarks: print a table, write JSON. "
                        "Without a subcommand: every stage in one go (as `bench all`).")
app.add_typer(index_app, name="index")
app.add_typer(bench_app, name="bench")


IndexOpt = Annotated[Path, typer.Option("--index", "-i", help="Index directory.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
EmbedderOpt = Annotated[Optional[str], typer.Option(
    "--embedder", help="Packaged model name or local sentence-transformers directory "
    "(default: the index's own; for a new index all-MiniLM-L6-v2).")]
BackendOpt = Annotated[Optional[str], typer.Option("--embed-backend", help="torch | onnx | onnx-int8.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for the models "
                                                   "(env RAGQA_THREADS).")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="A ragqa.toml settings file.")]
VectorBackendOpt = Annotated[Optional[str], typer.Option("--backend", help="Where a new index keeps its "
                             "vectors: faiss (default) | qdrant.")]
QdrantUrlOpt = Annotated[Optional[str], typer.Option("--qdrant-url", help="Qdrant server, e.g. "
                         "http://localhost:6333 (API key: env QDRANT_API_KEY).")]
QdrantPathOpt = Annotated[Optional[str], typer.Option("--qdrant-path", help="Qdrant local mode directory "
                          "(development; default INDEX/qdrant).")]
QdrantCollectionOpt = Annotated[Optional[str], typer.Option("--qdrant-collection", help="Collection name "
                                "(default ragqa-<index dir name>).")]


def for_variants(settings: Settings, model_flag: str | None, variants: list[str]) -> Settings:
    """Without --model, serve a variant on the base model its card names (and say so)."""
    if model_flag:
        return settings
    from ragqa.answering.pipeline import model_for_variants

    switched = model_for_variants(settings, variants)
    if switched.model != settings.model:
        err(f"using model {switched.model}: the base the variant was trained on")
    return switched


def err(message: str) -> None:
    typer.echo(message, err=True)


def warn_line(w) -> None:
    err(str(w))


@contextmanager
def progress_bar(label: str, unit: str = "docs"):
    """A rich progress bar on stderr when it is a terminal (UNIT/s and ETA); silent otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task(label, total=None, rate="")

        def update(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            rate = f"{done / elapsed:.1f} {unit}/s" if elapsed > 0 and done else ""
            bar.update(task, completed=done, total=total, rate=rate)

        yield update


def _packaged() -> str:
    from ragqa.generators.models import BASE_MODELS, DEFAULT_MODEL

    return ", ".join(f"{name} (default)" if name == DEFAULT_MODEL else name for name in BASE_MODELS)


ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help=f"Generator: packaged name "
                     f"({_packaged()}), local directory or hub id.")]
VariantOpt = Annotated[str, typer.Option("--variant", "-v", help="base, or a variant name from "
                                         "`ragqa variants list`.")]


def print_report(report, index: Path, json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps(report.to_json()))
        return
    what = "unchanged, nothing written" if report.version is None else f"version {report.version}"
    typer.echo(f"{index}: {report.documents} documents, {report.chunks} chunks ({what}); "
               f"added {report.added}, updated {report.updated}, removed {report.removed}, "
               f"unchanged {report.unchanged}, skipped {report.skipped} files, "
               f"{len(report.warnings)} warnings, {report.seconds:.1f} s")


def command_settings(config: Path | None = None, **overrides) -> Settings:
    """The settings of one command (file, environment, flags), its thread count given to OpenMP
    before torch loads."""
    from ragqa.config import Settings

    settings = Settings.load(config, **overrides)
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))
    return settings
