"""``ragqa serve`` (ragqa.apps.serve) with the clients people use: the official ``openai``
package and LangChain's ``ChatOpenAI``, against a real uvicorn server on 127.0.0.1 over the
deterministic FakeGenerator (the packaged model end to end: ``test_serve_e2e.py``)."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from ragqa import Index  # noqa: E402
from ragqa.answering.pipeline import RagQA  # noqa: E402
from ragqa.apps.serve import Server, check_bind, create_app  # noqa: E402
from ragqa.errors import ConfigError  # noqa: E402
from ragqa.testing import FakeGenerator  # noqa: E402


class RecordingGenerator(FakeGenerator):
    """Records each call's settings; its stream can be slow and says when it was closed."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.settings_seen = []
        self.closed = []
        self.pieces_out = 0

    def generate(self, prompt, variant="base", settings=None):
        self.settings_seen.append(settings)
        return super().generate(prompt, variant, settings)

    def stream(self, prompt, variant="base", settings=None):
        try:
            for piece in super().stream(prompt, variant, settings):  # piece_delay_s apart
                self.pieces_out += 1
                yield piece
        finally:
            self.closed.append(variant)


class Served:
    def __init__(self, qa, **kw):
        self.server = Server(qa, **kw)
        config = uvicorn.Config(create_app(self.server), host="127.0.0.1", port=_free_port(), log_level="error")
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.uvicorn.started:
            assert time.time() < deadline, "the server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{config.port}"

    def client(self, key: str = "none", **kw):
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kw)

    def stop(self):
        self.uvicorn.should_exit = True
        self.thread.join(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def qa(tmp_path, corpus, settings):
    Index.build([corpus], tmp_path / "idx", settings)
    with RagQA.open(tmp_path / "idx", settings, generator=RecordingGenerator(variants=("fake-lora",))) as qa:
        yield qa


@pytest.fixture
def served(qa):
    s = Served(qa)
    yield s
    s.stop()


QUESTION = "Where does the moon orbit?"


def test_models_lists_the_base_and_its_variants(served):
    ids = [m.id for m in served.client().models.list()]
    assert ids == ["fake-generator", "fake-lora", "plain/fake-generator", "plain/fake-lora"]
    assert served.client().models.retrieve("fake-lora").owned_by == "ragqa"
    assert httpx.get(f"{served.url}/health").json()["status"] == "ok"


def test_answer_from_the_index_with_sources_usage_and_timings(served):
    done = served.client().chat.completions.create(model="fake-generator",
                                                  messages=[{"role": "user", "content": QUESTION}])
    text = done.choices[0].message.content
    assert text == "Document 1. [1]"  # FakeGenerator: the first sentence of passage [1], cited
    assert done.choices[0].finish_reason == "stop" and done.model == "fake-generator"
    ext = done.model_extra["ragqa"]
    assert ext["mode"] == "rag" and not ext["abstained"] and ext["variant"] == "base"
    assert ext["sources"][0]["doc_id"] == "doc1.txt" and ext["sources"][0]["cited"]
    assert {"retrieve_ms", "prompt_tokens", "new_tokens"} <= set(ext["timings"])
    assert done.usage.completion_tokens == ext["timings"]["new_tokens"] > 0
    assert done.usage.prompt_tokens == ext["timings"]["prompt_tokens"] > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


def test_streaming_joins_to_the_same_answer_with_usage_last(served):
    client = served.client()
    whole = client.chat.completions.create(model="fake-lora", messages=[{"role": "user", "content": QUESTION}])
    chunks = list(client.chat.completions.create(model="fake-lora", stream=True,
                                                 stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": QUESTION}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and text.endswith("(fake-lora)")
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finished) == 1 and finished[0].model_extra["ragqa"]["sources"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_model_picks_the_variant_and_unknown_is_404(served, qa):
    client = served.client()
    for model, marker in (("fake-lora", "(fake-lora)"), ("fake-generator", "[1]")):
        text = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}]
                                              ).choices[0].message.content
        assert text.endswith(marker)
    assert qa.generator.calls[-2][0] == "fake-lora" and qa.generator.calls[-1][0] == "base"
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    assert caught.value.code == "model_not_found" and "fake-lora" in caught.value.message


def test_max_tokens_temperature_and_stop_are_honoured(served, qa):
    client = served.client()
    gen = qa.generator
    done = client.chat.completions.create(model="fake-generator", max_tokens=2,
                                          messages=[{"role": "user", "content": QUESTION}])
    assert done.choices[0].finish_reason == "length"
    assert gen.settings_seen[-1].max_new_tokens == 2 and not gen.settings_seen[-1].do_sample
    client.chat.completions.create(model="fake-generator", temperature=0.6, top_p=0.5,
                                   messages=[{"role": "user", "content": QUESTION}])
    s = gen.settings_seen[-1]
    assert s.do_sample and s.temperature == 0.6 and s.top_p == 0.5
    for stream in (False, True):
        reply = client.chat.completions.create(model="fake-generator", stop=[" 1."], stream=stream,
                                               messages=[{"role": "user", "content": QUESTION}])
        text = ("".join(c.choices[0].delta.content or "" for c in reply if c.choices) if stream
                else reply.choices[0].message.content)
        assert text == "Document [1]"  # cut before " 1."; the citation is ragqa's (auto_cited)


def test_follow_up_uses_the_history(served, qa):
    messages = [{"role": "user", "content": "What orbits the earth?"},
                {"role": "assistant", "content": "The moon orbits the earth. [1]"},
                {"role": "user", "content": "And how long does it take?"}]
    served.client().chat.completions.create(model="fake-generator", messages=messages)
    prompts = [p for _, p in qa.generator.calls[-2:]]
    assert "standalone" in prompts[0] and "What orbits the earth?" in prompts[0]  # the rewrite saw the history


def test_plain_mode_sends_the_messages_as_given(served, qa):
    client = served.client()
    messages = [{"role": "system", "content": "Use this context."},
                {"role": "user", "content": "Context:\n[1] Mine\nThe tide turns twice a day. Other text."}]
    for extra in ({"model": "plain/fake-generator"}, {"model": "fake-generator", "extra_body": {"use_context": False}}):
        done = client.chat.completions.create(messages=messages, **extra)
        assert done.choices[0].message.content == "The tide turns twice a day. [1]"
        assert done.model_extra["ragqa"]["mode"] == "plain"
        prompt = qa.generator.calls[-1][1]
        assert prompt.startswith("System: Use this context.") and "moon" not in prompt  # nothing retrieved


def test_plain_mode_json_schema_output(served, qa):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "year": {"type": "integer"}},
              "required": ["city", "year"]}
    done = served.client().chat.completions.create(
        model="plain/fake-generator", messages=[{"role": "user", "content": "Where and when?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}})
    assert json.loads(done.choices[0].message.content) == {"city": "fake", "year": 0}
    assert qa.generator.settings_seen[-1].json_schema == schema
    with pytest.raises(openai.BadRequestError, match="plain mode"):
        served.client().chat.completions.create(model="fake-generator", response_format={"type": "json_object"},
                                                messages=[{"role": "user", "content": QUESTION}])


def test_bad_requests_get_openai_errors(served):
    url = f"{served.url}/v1/chat/completions"
    r = httpx.post(url, content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(url, json={"model": "fake-generator"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = httpx.post(url, json={"model": "fake-generator", "messages": [{"role": "assistant", "content": "hi"}]})
    assert r.status_code == 400 and "last message" in r.json()["error"]["message"]
    r = httpx.post(url, json={"model": "fake-generator", "n": 2, "messages": [{"role": "user", "content": "q"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    r = httpx.post(url, json={"model": "fake-generator", "messages": [{"role": "user", "content": "x" * (2 << 20)}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.get(f"{served.url}/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    with pytest.raises(openai.BadRequestError, match="image_url"):
        served.client().chat.completions.create(model="fake-generator", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:,"}}]}])


def test_api_key_is_checked_when_set(qa):
    served = Served(qa, api_key="sesame")
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            served.client("wrong").models.list()
        assert caught.value.code == "invalid_api_key"
        assert [m.id for m in served.client("sesame").models.list()][0] == "fake-generator"
        assert httpx.get(f"{served.url}/health").status_code == 200  # health needs no key
    finally:
        served.stop()


def test_binding_beyond_localhost_needs_a_key():
    with pytest.raises(ConfigError, match="--api-key"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "key")
    for host in ("127.0.0.1", "localhost", "::1"):
        check_bind(host, None)


def test_concurrent_requests_on_different_variants_never_cross(qa):
    qa.generator.delay_s = 0.02
    served = Served(qa, max_queue=16)
    try:
        client = served.client()

        def ask(variant):
            text = client.chat.completions.create(model=variant, messages=[{"role": "user", "content": QUESTION}]
                                                  ).choices[0].message.content
            return variant, text

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(ask, ["fake-lora", "fake-generator"] * 6))
        for variant, text in results:
            assert text.endswith("(fake-lora)") == (variant == "fake-lora"), (variant, text)
    finally:
        served.stop()


def test_a_full_queue_gets_503_with_retry_after(qa):
    qa.generator.piece_delay_s = 0.3
    served = Served(qa, max_queue=0)
    try:
        body = {"model": "fake-generator", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
        with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=body) as first:
            lines = first.iter_lines()  # held: a dropped line iterator closes the response
            next(lines)  # the first answer is being written
            busy = httpx.post(f"{served.url}/v1/chat/completions", json={**body, "stream": False})
            assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
            assert busy.json()["error"]["code"] == "server_busy"
            assert list(lines)[-2] == "data: [DONE]"  # the first one is answered in full
        deadline = time.time() + 10
        while served.server.admission.active and time.time() < deadline:
            time.sleep(0.05)
        assert served.server.admission.active == 0  # the first one's place was given back
    finally:
        served.stop()


def test_a_client_that_leaves_stops_the_generation(qa):
    qa.generator.piece_delay_s = 0.2
    served = Served(qa)
    try:
        stream = served.client().chat.completions.create(model="fake-generator", stream=True,
                                                         messages=[{"role": "user", "content": QUESTION}])
        next(iter(stream))
        stream.close()
        deadline = time.time() + 10
        while not qa.generator.closed and time.time() < deadline:
            time.sleep(0.05)
        assert qa.generator.closed == ["base"]
        assert qa.generator.pieces_out < len("Document 1. [1]".split())  # stopped before the end
    finally:
        served.stop()


def test_langchain_chat_openai_against_the_server(served):
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(base_url=f"{served.url}/v1", api_key="none", model="fake-generator", max_retries=0)
    message = chat.invoke(QUESTION)
    assert message.content == "Document 1. [1]" and message.usage_metadata["output_tokens"] > 0
    streamed = "".join(c.content for c in chat.stream(QUESTION))
    assert streamed == message.content
    lora = ChatOpenAI(base_url=f"{served.url}/v1", api_key="none", model="fake-lora", max_retries=0)
    assert lora.invoke(QUESTION).content.endswith("(fake-lora)")


def test_a_stream_gets_bad_request_errors_as_a_status(served):
    """Checked before anything is queued: a client sees 400, not a 200 stream with an error in it."""
    url = f"{served.url}/v1/chat/completions"
    for body, param in (({"n": 3}, "n"), ({"tools": [{"type": "function"}]}, "tools"),
                        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages")):
        r = httpx.post(url, json={"model": "fake-generator", "stream": True,
                                  "messages": [{"role": "user", "content": QUESTION}], **body})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
    assert served.server.admission.active == 0
