"""`ragqa ask`, `generate`, `demo`, `ui` and `variants ...`: answering and the generator's variants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ragqa import resources
from ragqa.apps.common import (ConfigOpt, IndexOpt, JsonOpt, ModelOpt, ThreadsOpt, VariantOpt, app,
                               command_settings, err, for_variants, print_report, progress_bar, warn_line)
from ragqa.errors import ConfigError, RagqaError


@app.command("ask")
def ask(
    question: Annotated[Optional[str], typer.Argument(help="The question (or use --questions).")] = None,
    index: IndexOpt = Path("indexes/demo"),
    model: ModelOpt = None,
    variant: VariantOpt = "base",
    k: Annotated[Optional[int], typer.Option("-k", help="Passages to retrieve.")] = None,
    mode: Annotated[Optional[str], typer.Option("--mode", help="dense | bm25 | hybrid.")] = None,
    questions: Annotated[Optional[Path], typer.Option("--questions", help='JSONL of {"id", "question"}.')] = None,
    stream: Annotated[bool, typer.Option("--stream", help="Print the answer as it is generated.")] = False,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens")] = None,
    template: Annotated[Optional[str], typer.Option("--template", help="qa, qa-concise or a .toml file.")] = None,
    show_prompt: Annotated[bool, typer.Option("--show-prompt", help="Print the exact text the model is "
                                              "given (with --json: the \"prompt\" field).")] = False,
    json_out: JsonOpt = False,
    threads: ThreadsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Answer a question from the index, citing the passages used."""
    from ragqa.evaluation.evaluate import read_queries
    from ragqa.answering.pipeline import RagQA

    if (question is None) == (questions is None):
        raise ConfigError("give either a QUESTION or --questions FILE")
    settings = for_variants(command_settings(config, threads=threads, max_new_tokens=max_new_tokens, model=model),
                             model, [variant])
    with RagQA.open(index, settings) as qa:
        qa.check_variant(variant)  # an unknown variant is refused before retrieval and model loading
        if questions is not None:
            for qid, text in read_queries(questions, text_key="question"):
                ans = qa.ask(text, variant=variant, k=k, mode=mode, template=template)
                out = ans.to_json(prompt=show_prompt)
                keys = ("answer", "abstained", "reason", "variant", "sources", "timings") + (
                    ("prompt",) if show_prompt else ())
                typer.echo(json.dumps({"id": qid, **{key: out[key] for key in keys}}, ensure_ascii=False))
            return
        if stream and not json_out:
            status = status_printer(show_prompt)
            print_sources(echo_stream(qa.stream(question, variant=variant, k=k, mode=mode, template=template,
                                                  status=status)))
            return
        ans = qa.ask(question, variant=variant, k=k, mode=mode, template=template)
    if json_out:
        typer.echo(json.dumps(ans.to_json(prompt=show_prompt), ensure_ascii=False))
        return
    if show_prompt:
        print_prompt(ans.prompt)
    typer.echo(ans.text)
    print_sources(ans)


def print_prompt(prompt: str | None) -> None:
    if prompt is None:
        typer.echo("--- no prompt: ragqa answered without asking the model ---")
        return
    typer.echo(f"--- the prompt, exactly as the model reads it ---\n{prompt}\n--- end of the prompt ---")


def status_printer(show_prompt: bool):
    """What ``ask --stream`` says before the first token: each stage on stderr (so the answer on
    stdout stays clean), and with --show-prompt the prompt once it is built."""
    def status(st) -> None:
        if show_prompt and st.prompt is not None:
            print_prompt(st.prompt.text)
        err(f"({st.message} ...)")
    return status


def echo_stream(pieces, prefix: str = ""):
    """Print streamed text as it comes (``prefix`` before the first piece); return the final
    Answer (whose text may end with a citation ragqa added after the model finished: print that
    rest too)."""
    from ragqa.answering.pipeline import Answer

    shown, ans = "", None
    for piece in pieces:
        if isinstance(piece, Answer):
            ans = piece
        else:
            typer.echo((prefix if not shown else "") + piece, nl=False)
            shown += piece
    rest = ans.text[len(shown.strip()):] if ans.text.startswith(shown.strip()) else ""
    typer.echo(rest)
    return ans


def print_sources(ans) -> None:
    if ans.abstained and ans.reason:
        typer.echo(f"({ans.reason})")
    for s in ans.sources:
        text = " ".join(s.text.split())
        page = f", page {s.page}" if s.page else ""
        typer.echo(f"[{s.n}]{'*' if s.cited else ' '} {s.title or s.doc_id} ({s.doc_id}{page}, score {s.score:.3f})\n"
                   f"     {text[:240]}")
    t = ans.timings
    if "generate_ms" in t:
        from ragqa.generators.engine import describe_timings, seconds

        added = "; the model cited nothing, ragqa added the citation" if ans.auto_cited else ""
        typer.echo(f"({ans.variant}; retrieve {seconds(t['retrieve_ms'])}, {describe_timings(t)}{added})")


variants_app = typer.Typer(no_args_is_help=True, help="Generator variants (base, LoRA, soft prompts, ...).")
app.add_typer(variants_app, name="variants")


@variants_app.command("list")
def variants_list(
    model: ModelOpt = None,
    all_models: Annotated[bool, typer.Option("--all", help="Variants of every base model.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Variants in the variants directory, plus a `base` entry for each available base model."""
    from ragqa.generators import BASE_MODELS, list_variants

    settings = command_settings(model=model)
    bases = [settings.model] if model else list(BASE_MODELS)
    rows = list_variants(settings.variants_dir, bases)
    if json_out:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    for r in rows:
        typer.echo(f"{r['name']:28s} {r['kind']:14s} {r['base_model']:30s} {r['path']}")


@variants_app.command("inspect")
def variants_inspect(
    name: Annotated[str, typer.Argument(help="Variant name (under the variants directory) or directory.")],
    model: ModelOpt = None,
    top: Annotated[int, typer.Option("--top", help="Nearest vocabulary tokens per soft-prompt token.")] = 5,
    json_out: JsonOpt = False,
) -> None:
    """What a variant holds: LoRA ranks, parameter count and size on disk; for a soft prompt, the
    vocabulary tokens nearest to each virtual token."""
    from ragqa.generators.inspect import format_inspection, inspect_variant
    from ragqa.generators.models import resolve_model
    from ragqa.generators.registry import Card, find_variant_dir

    settings = command_settings(model=model)
    directory = find_variant_dir(name, settings.variants_dir)
    card = Card.load(directory)
    base = None
    if card.kind == "prompt-tuning":
        base = resolve_model(model or card.base_model or settings.model, settings.cache_dir)
    info = inspect_variant(directory, Path(base) if base and Path(base).is_dir() else None, top=top)
    typer.echo(json.dumps(info, ensure_ascii=False) if json_out else format_inspection(info))


@app.command("ui")
def ui(
    index: Annotated[Optional[Path], typer.Option("--index", "-i", help="Index to open first "
                                                  "(every index under indexes/ is offered too).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="Port on 127.0.0.1 (default 8501).")] = None,
    browser: Annotated[bool, typer.Option("--browser/--no-browser", help="Open a browser tab.")] = False,
) -> None:
    """Chat with your documents in the browser (Streamlit) on http://127.0.0.1:PORT."""
    from ragqa.apps.ui_launch import launch

    code = launch(index, port, headless=not browser)
    if code:
        raise typer.Exit(code)


# --- demo ------------------------------------------------------------------------------
DEMO_QUESTION = "When did Apollo 11 land on the Moon, and who was in its crew?"


@app.command("demo")
def demo(
    index: IndexOpt = Path("indexes/demo"),
    question: Annotated[str, typer.Option("--question", "-q")] = DEMO_QUESTION,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Index the bundled demo corpus (data/demo) and answer a question from it, with sources."""
    from ragqa.indexing.index import Index
    from ragqa.answering.pipeline import RagQA

    corpus = resources.demo_corpus()
    if not corpus.is_dir():
        raise RagqaError(f"{corpus}: the demo corpus is missing; reinstall ragqa (its wheel carries it)")
    settings = command_settings(threads=threads, model=model)
    with progress_bar("indexing") as progress:
        report = Index.build([corpus], index, settings, warn=warn_line, progress=progress)
    print_report(report, index, False)
    typer.echo(f"\nQ: {question}\n(loading {settings.model}; the first run converts it once, ~1-2 min)")
    with RagQA.open(index, settings) as qa:
        print_sources(echo_stream(qa.stream(question, status=status_printer(False)), prefix="A: "))


@app.command("generate")
def generate(
    input_file: Annotated[Path, typer.Option("--input", help='JSONL of {"id", "input"}.')],
    template: Annotated[str, typer.Option("--template", help="summarize, qa, ... or a .toml file.")] = "summarize",
    model: ModelOpt = None,
    variant: VariantOpt = "base",
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens")] = None,
    json_out: JsonOpt = True,
    threads: ThreadsOpt = None,
) -> None:
    """Plain generation with a template (summarisation, QA-data synthesis): one output per input line."""
    from ragqa.answering.pipeline import make_generator
    from ragqa.answering.plain import plain_outputs
    from ragqa.evaluation.evaluate import read_queries

    settings = for_variants(command_settings(threads=threads, model=model, max_new_tokens=max_new_tokens),
                             model, [variant])
    items = read_queries(input_file, text_key="input")
    for item_id, out in plain_outputs(make_generator(settings), settings, template, items, variant):
        typer.echo(json.dumps({"id": item_id, "output": out}, ensure_ascii=False) if json_out else out)
