"""``ragqa bench structured``: what decoding constrained to a JSON schema buys and costs.

The same extraction prompts (the schema is in the system message either way) are answered freely
and constrained (``GenerationSettings.json_schema``), greedy, interleaved: how many answers parse
and validate against the schema, seconds per answer and decode tokens/s; plus the one-time table
of the tokenizer the constraint needs (built on first use, cached for the process)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ragqa.config import Settings


class Mission(BaseModel):
    mission: str
    year: int


class Crew(BaseModel):
    mission: str
    commander: str
    crew_size: int


class Landing(BaseModel):
    site: str
    landed: bool
    duration_hours: float


TASKS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("Apollo 11 landed on the Moon on July 20, 1969, in the Sea of Tranquility.", Mission),
    ("Apollo 13 launched in 1970; an oxygen tank failed and the landing was called off.", Mission),
    ("Apollo 11 was commanded by Neil Armstrong, with Buzz Aldrin and Michael Collins: three astronauts.", Crew),
    ("Gemini 8, commanded by Neil Armstrong with David Scott, made the first docking in orbit.", Crew),
    ("Apollo 15 landed at Hadley Rille and stayed on the surface for 67 hours.", Landing),
    ("Apollo 13 never landed; it swung around the Moon and came home after about 142 hours.", Landing),
)


def _valid(text: str, model: type[BaseModel]) -> bool:
    try:
        model.model_validate_json(text)
        return True
    except (ValidationError, ValueError):
        return False


def _valid_inside(text: str, model: type[BaseModel]) -> bool:
    """Lenient: the first JSON object anywhere in the text (after prose, inside a code fence) validates."""
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        try:
            model.model_validate(value)
            return True
        except ValidationError:
            return False
    return False


def bench_structured(settings: Settings, out: Path, *, max_new_tokens: int = 64,
                     echo: Callable[[str], None] = print) -> dict:
    from ragqa.answering.pipeline import make_generator
    from ragqa.answering.prompting import render
    from ragqa.benchmarks.bench import _write_results, cpu_flags, machine_info
    from ragqa.generators.constrained import tokenizer_table, with_schema_instruction
    from ragqa.generators.engine import GenerationSettings, stop_ids

    gen = make_generator(settings)
    echo(f"loading {settings.model} ...")
    gen.load()
    started = time.perf_counter()
    tokenizer_table(gen.tokenizer, stop_ids(gen.tokenizer, gen.model.generation_config))
    table_s = time.perf_counter() - started  # the constrained runs below find it built
    rows = []
    for i, (text, model) in enumerate(TASKS, 1):
        schema = model.model_json_schema()
        messages = with_schema_instruction(
            [{"role": "user", "content": f"Extract the fields from this text.\n\n{text}"}], schema)
        prompt = render(messages, gen.tokenizer)
        row = {"text": text, "schema": model.__name__}
        for mode, constraint in (("free", None), ("constrained", schema)):
            result = gen.generate(prompt, settings=GenerationSettings(max_new_tokens=max_new_tokens,
                                                                      json_schema=constraint))
            row[mode] = {"answer": result.text, "valid": _valid(result.text, model),
                         "valid_inside": _valid_inside(result.text, model),
                         "seconds": result.generate_ms / 1000, "new_tokens": result.new_tokens,
                         "decode_tokens_per_s": result.timings().get("decode_tokens_per_s")}
        echo(f"{i}/{len(TASKS)} free {'ok' if row['free']['valid'] else 'INVALID'} "
             f"{row['free']['seconds']:.1f} s | constrained {'ok' if row['constrained']['valid'] else 'INVALID'} "
             f"{row['constrained']['seconds']:.1f} s: {row['constrained']['answer'][:60]!r}")
        rows.append(row)
    results = {"model": settings.model, "machine": machine_info(settings.threads), "cpu_flags": cpu_flags(),
               "threads": settings.threads, "max_new_tokens": max_new_tokens, "table_build_s": table_s,
               "vocab": len(gen.tokenizer), "tasks": rows}
    for mode in ("free", "constrained"):
        results[mode] = {
            "valid": sum(r[mode]["valid"] for r in rows), "of": len(rows),
            "valid_inside": sum(r[mode]["valid_inside"] for r in rows),
            "seconds_p50": statistics.median(r[mode]["seconds"] for r in rows),
            "decode_tokens_per_s_p50": statistics.median(
                r[mode]["decode_tokens_per_s"] for r in rows if r[mode]["decode_tokens_per_s"]),
            "new_tokens_p50": statistics.median(r[mode]["new_tokens"] for r in rows)}
    _write_results(out, results, format_structured_table(results), echo)
    return results


def format_structured_table(r: dict) -> str:
    from ragqa.benchmarks.bench import flags_words

    m = r["machine"]
    f, c = r["free"], r["constrained"]
    return "\n".join([
        f"{len(r['tasks'])} extraction prompts, {r['model']}, greedy, {r['threads']} threads, at most "
        f"{r['max_new_tokens']} new tokens; {m['cpu']} {flags_words(r)}, load "
        f"{m['load_avg_at_start']:.1f}",
        "| measurement | free | constrained to the schema |", "|---|---|---|",
        f"| answers that parse and validate | {f['valid']}/{f['of']} | {c['valid']}/{c['of']} |",
        f"| ... counting the first {{...}} inside prose or a code fence | {f['valid_inside']}/{f['of']} | "
        f"{c['valid_inside']}/{c['of']} |",
        f"| seconds per answer p50 | {f['seconds_p50']:.2f} | {c['seconds_p50']:.2f} |",
        f"| new tokens p50 | {f['new_tokens_p50']:.0f} | {c['new_tokens_p50']:.0f} |",
        f"| decode tokens/s p50 | {f['decode_tokens_per_s_p50']:.1f} | {c['decode_tokens_per_s_p50']:.1f} |",
        f"| tokenizer table (once per process, {r['vocab']:,} tokens) | - | {r['table_build_s']:.1f} s |"])
