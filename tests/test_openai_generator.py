"""The OpenAI-compatible generator against a small local fake of vLLM's API (http.server in a
thread): the variant goes out as the request's model, streaming works, and errors are one line."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ragqa import Index, ModelError
from ragqa.config import Settings
from ragqa.errors import ConfigError
from ragqa.generators import GenerationSettings
from ragqa.generators.openai_client import OpenAIGenerator
from ragqa.testing import WordTokenizer
from ragqa.answering.pipeline import RagQA, make_generator

MODELS = [{"id": "Qwen/Qwen2.5-0.5B-Instruct", "object": "model", "root": "Qwen/Qwen2.5-0.5B-Instruct",
           "parent": None, "max_model_len": 4096},
          {"id": "squad-lora", "object": "model", "root": "adapters/squad-lora", "parent": "Qwen/Qwen2.5-0.5B-Instruct"}]


class FakeVLLM(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def log_message(self, *args):
        pass

    def _json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": MODELS})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeVLLM.requests.append({**body, "auth": self.headers.get("Authorization")})
        if self.path != "/v1/completions":
            return self._json(404, {"error": {"message": "not found"}})
        if body["model"] not in {m["id"] for m in MODELS}:
            return self._json(404, {"error": {"message": f"The model `{body['model']}` does not exist."}})
        words = f"Answer from {body['model']} [1]".split(" ")[: body["max_tokens"]]
        if not body.get("stream"):
            return self._json(200, {"choices": [{"text": " ".join(words), "index": 0}],
                                    "usage": {"prompt_tokens": 7, "completion_tokens": len(words)}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, w in enumerate(words):
            event = {"choices": [{"text": (w if i == 0 else " " + w), "index": 0}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
        usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(words)}}
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())


def _serve(handler):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def server():
    FakeVLLM.requests = []
    httpd, url = _serve(FakeVLLM)
    yield url
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def misbehaving():
    """``misbehaving(get=..., post=...)``: the URL of a FakeVLLM whose GET /v1/models or POST
    /v1/completions is the given function of the handler; ``stop`` is set when the test ends."""
    servers, stop = [], threading.Event()

    def start(get=None, post=None):
        handler = type("Misbehaving", (FakeVLLM,), {"stop": stop})
        if get:
            handler.do_GET = get
        if post:
            def do_post(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                post(self)
            handler.do_POST = do_post
        httpd, url = _serve(handler)
        servers.append(httpd)
        return url

    yield start
    stop.set()
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _reply(handler, body: bytes, ctype: str):
    handler.send_response(200)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _events(handler, *events, done=False):
    """A text/event-stream reply of these ``data:`` events (objects or raw strings)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.end_headers()
    for event in events:
        handler.wfile.write(f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode())
    if done:
        handler.wfile.write(b"data: [DONE]\n\n")
    handler.wfile.flush()


def _fails(call, url, *parts) -> str:
    """The ModelError ``call()`` raises, checked to be one line naming the server and ``parts``."""
    with pytest.raises(ModelError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and url in message, message
    for part in parts:
        assert part in message, message
    return message


def test_variant_is_the_request_model(server):
    gen = OpenAIGenerator(server + "/v1", tokenizer=WordTokenizer())
    out = gen.generate("Question?", variant="squad-lora", settings=GenerationSettings(max_new_tokens=10))
    assert out.text == "Answer from squad-lora [1]" and out.new_tokens == 4 and out.prompt_tokens == 7
    assert out.variant == "squad-lora" and out.generate_ms > 0
    base = gen.generate("Question?")
    assert base.text.startswith("Answer from Qwen/Qwen2.5-0.5B-Instruct")
    req = FakeVLLM.requests[0]
    assert req["model"] == "squad-lora" and req["prompt"] == "Question?" and req["max_tokens"] == 10
    assert req["temperature"] == 0.0 and req["repetition_penalty"] == 1.1 and req["stream"] is True
    assert gen.context_length == 4096
    names = {v["name"]: v for v in gen.variants()}
    assert set(names) == {"base", "squad-lora"} and names["squad-lora"]["kind"] == "lora"


def test_stream_pieces_join_to_the_text(server):
    gen = OpenAIGenerator(server, tokenizer=WordTokenizer(), api_key="secret")  # /v1 is added
    pieces = list(gen.stream("Q", variant="squad-lora"))
    assert "".join(pieces) == "Answer from squad-lora [1]" and len(pieces) == 4
    assert FakeVLLM.requests[-1]["auth"] == "Bearer secret"


def test_pipeline_answers_through_the_server(tmp_path, corpus, settings, server):
    Index.build([corpus], tmp_path / "idx", settings)
    s = settings.replace(model=f"openai:{server}/v1", generator_tokenizer="fake", abstain_threshold=0.0)
    gen = make_generator(s)
    assert isinstance(gen, OpenAIGenerator)
    with RagQA.open(tmp_path / "idx", s) as qa:
        answer = qa.ask("What orbits the earth?", variant="squad-lora")
        assert answer.text == "Answer from squad-lora [1]" and answer.sources[0].cited
        assert answer.timings["new_tokens"] == 4
        streamed = list(qa.stream("What orbits the earth?", variant="base"))
        assert streamed[-1].text.startswith("Answer from Qwen") and isinstance(streamed[0], str)
    assert "passage" in FakeVLLM.requests[0]["prompt"].lower() or "[1]" in FakeVLLM.requests[0]["prompt"]


def test_errors_are_one_line(server):
    gen = OpenAIGenerator(server, tokenizer=WordTokenizer())
    with pytest.raises(ModelError, match="HTTP 404.*does not exist.*serves Qwen/Qwen2.5-0.5B-Instruct, squad-lora"):
        gen.generate("Q", variant="nope")
    down = OpenAIGenerator("http://127.0.0.1:9", tokenizer=WordTokenizer(), timeout=2)
    with pytest.raises(ModelError, match="cannot connect"):
        down.generate("Q")
    with pytest.raises(Exception, match="give the server's URL"):
        OpenAIGenerator("localhost:8000", tokenizer=WordTokenizer())


def test_a_stream_cut_before_done_is_an_error(misbehaving):
    def cut(handler):  # two pieces, then the server goes away without [DONE]
        _events(handler, {"choices": [{"text": "Half"}]}, {"choices": [{"text": " an answer"}]})

    url = misbehaving(post=cut)
    gen = OpenAIGenerator(url, tokenizer=WordTokenizer())
    _fails(lambda: gen.generate("Q"), url, "/v1/completions", "before [DONE] after 14 characters", "incomplete")
    pieces = gen.stream("Q")
    assert next(pieces) == "Half" and next(pieces) == " an answer"
    _fails(lambda: next(pieces), url, "incomplete")


def test_a_chunked_stream_cut_mid_body_is_an_error(misbehaving):
    def cut(handler):  # HTTP/1.1 chunked: the connection closes inside the body
        handler.protocol_version = "HTTP/1.1"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        data = f"data: {json.dumps({'choices': [{'text': 'Half'}]})}\n\n".encode()
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        handler.wfile.flush()
        handler.close_connection = True

    url = misbehaving(post=cut)
    _fails(lambda: OpenAIGenerator(url, tokenizer=WordTokenizer()).generate("Q"), url, "before [DONE] after 4 characters")


def test_an_html_page_instead_of_a_stream_is_an_error(misbehaving):
    page = b"<!DOCTYPE html>\n<html><body><h1>Sign in to the proxy</h1></body></html>"
    url = misbehaving(post=lambda h: _reply(h, page, "text/html; charset=utf-8"))
    _fails(lambda: OpenAIGenerator(url, tokenizer=WordTokenizer()).generate("Q"), url, "/v1/completions", "text/html",
           "Sign in to the proxy")


def test_a_json_reply_instead_of_a_stream_is_an_error(misbehaving):
    body = json.dumps({"choices": [{"text": "Answer", "index": 0}]}).encode()
    url = misbehaving(post=lambda h: _reply(h, body, "application/json"))
    _fails(lambda: OpenAIGenerator(url, tokenizer=WordTokenizer()).generate("Q"), url, "application/json", "Answer")


def test_keep_alive_lines_do_not_outlast_the_total_time_limit(misbehaving):
    def pings(handler):  # comments and blank lines, never an answer
        _events(handler)
        while not handler.stop.wait(0.2):
            handler.wfile.write(b": ping\n\n\n")
            handler.wfile.flush()

    url = misbehaving(post=pings)
    gen = OpenAIGenerator(url, tokenizer=WordTokenizer(), timeout=1.5)
    started = time.monotonic()
    _fails(lambda: gen.generate("Q"), url, "total time limit of 1.5 s", "request_timeout")
    assert time.monotonic() - started < 10


def test_a_silent_server_does_not_outlast_the_total_time_limit(misbehaving):
    def silent(handler):  # one piece, then nothing at all
        _events(handler, {"choices": [{"text": "Half"}]})
        handler.stop.wait(30)

    url = misbehaving(post=silent)
    started = time.monotonic()
    _fails(lambda: OpenAIGenerator(url, tokenizer=WordTokenizer(), timeout=1.5).generate("Q"), url, "total time limit")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("body, ctype, what", [
    (b"<html><body>Not the API</body></html>", "text/html", "not JSON: '<html><body>Not the API"),
    (json.dumps(MODELS).encode(), "application/json", 'expected a JSON object with a "data" list, got a list'),
    (json.dumps({"data": {"id": "m"}}).encode(), "application/json", '"data" is an object, not a list'),
    (json.dumps({"data": [MODELS[0], {"object": "model"}]}).encode(), "application/json",
     'model 1 in "data" has no "id"'),
], ids=["not-json", "a-list", "data-not-a-list", "model-without-id"])
def test_a_malformed_model_list_is_an_error(misbehaving, body, ctype, what):
    url = misbehaving(get=lambda h: _reply(h, body, ctype))
    gen = OpenAIGenerator(url, tokenizer=WordTokenizer())
    _fails(gen.load, url, "/v1/models", what)
    _fails(gen.variants, url, what)
    _fails(lambda: gen.generate("Q"), url, what)


@pytest.mark.parametrize("event, what", [
    ({"choices": {"text": "x"}}, '"choices" is an object, not a list'),
    ({"choices": ["x"]}, "choice 0 is a string, not an object"),
    ({"choices": [{"text": 5}]}, '"text" of choice 0 is a number, not a string'),
    ([{"text": "x"}], "an event is a list, not a JSON object"),
    ({"choices": [], "usage": [7]}, '"usage" is a list, not an object'),
], ids=["choices-not-a-list", "choice-not-an-object", "text-not-a-string", "event-not-an-object",
        "usage-not-an-object"])
def test_completion_events_of_the_wrong_type_are_errors(misbehaving, event, what):
    url = misbehaving(post=lambda h: _events(h, event, done=True))
    _fails(lambda: OpenAIGenerator(url, tokenizer=WordTokenizer()).generate("Q"), url, "/v1/completions", what)


def test_request_timeout_is_a_setting_passed_to_the_generator(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ragqa.toml
    assert Settings().request_timeout == 300.0
    monkeypatch.setenv("RAGQA_REQUEST_TIMEOUT", "12.5")
    settings = Settings.load(model="openai:http://127.0.0.1:9/v1", generator_tokenizer="fake")
    assert settings.request_timeout == 12.5
    gen = make_generator(settings)
    assert isinstance(gen, OpenAIGenerator) and gen.timeout == 12.5
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match="request_timeout"):
            Settings(request_timeout=bad)
