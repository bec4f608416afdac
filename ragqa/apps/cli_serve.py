"""``ragqa serve``: the OpenAI-compatible HTTP API over an index (``ragqa.apps.serve``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ragqa.apps.common import ConfigOpt, IndexOpt, ModelOpt, ThreadsOpt, app, command_settings, err
from ragqa.apps.serve import DEFAULT_MAX_QUEUE, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_PORT


@app.command("serve")
def serve(
    index: IndexOpt,
    host: Annotated[str, typer.Option("--host", help="Address to listen on; beyond 127.0.0.1 needs "
                                      "--api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port.")] = DEFAULT_PORT,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="RAGQA_API_KEY", show_envvar=True,
                                                   help="Clients must send 'Authorization: Bearer KEY'.")] = None,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
    config: ConfigOpt = None,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Requests that may wait while one is "
                                           "answered; more get 503 with Retry-After.")] = DEFAULT_MAX_QUEUE,
    max_request_bytes: Annotated[int, typer.Option("--max-request-bytes", help="Larger request bodies "
                                                   "get 413.")] = DEFAULT_MAX_REQUEST_BYTES,
) -> None:
    """Serve the index over the OpenAI API (/v1/chat/completions, /v1/models, /health): any OpenAI
    client, LangChain's ChatOpenAI or Open WebUI can ask your documents."""
    from ragqa.answering.pipeline import RagQA
    from ragqa.apps.serve import check_bind, run

    check_bind(host, api_key)  # before anything loads
    settings = command_settings(config, threads=threads, model=model)
    with RagQA.open(Path(index), settings) as qa:
        load = getattr(qa.generator, "load", None)
        if load is not None:
            err(f"loading {qa.generator.model_name} (the first run converts it once; about a minute)")
            load()
        run(qa, host, port, api_key=api_key, max_request_bytes=max_request_bytes, max_queue=max_queue,
            log_level=os.environ.get("RAGQA_SERVE_LOG", "info"),
            ready=lambda url: err(f"serving {index} on {url} (model {qa.generator.model_name}; "
                                  f"GET {url}/models lists the variants; Ctrl-C stops)"))
