"""ragqa.files: the one JSONL reader (one error wording), atomic writes, file sha256, one_line."""

import hashlib
import json
import os

import pytest

from ragqa.errors import ConfigError, InputNotFound
from ragqa.files import (describe_json_error, file_sha256, one_line, read_jsonl, write_atomic, write_json_atomic,
                         write_jsonl_atomic)


def test_read_jsonl_lines_and_numbers(tmp_path):
    f = tmp_path / "a.jsonl"
    # a BOM, CRLF, a blank line, and a U+2028 inside a string (no line break: str.splitlines would split it)
    f.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\n' + json.dumps({"t": "x\u2028y"}, ensure_ascii=False).encode() + b"\n")
    assert list(read_jsonl(f)) == [(1, {"a": 1}), (3, {"t": "x\u2028y"})]


@pytest.mark.parametrize("data,message", [
    (b'{"a": 1}\nnot json\n', r"a\.jsonl:2: not valid JSON \(Expecting value at column 1\); fix or remove that line"),
    (b'{"a": 1}\n[1, 2]\n', r"a\.jsonl:2: expected a JSON object, got an array; fix or remove that line"),
    (b'{"a": "\xff"}\n', r"a\.jsonl:1: not valid UTF-8 \(byte 0xff at offset 7 of the line\); convert"),
])
def test_read_jsonl_one_wording(tmp_path, data, message):
    f = tmp_path / "a.jsonl"
    f.write_bytes(data)
    with pytest.raises(ConfigError, match=message) as err:
        list(read_jsonl(f))
    assert "\n" not in str(err.value)
    assert list(read_jsonl(f, skip_bad=True)) in ([(1, {"a": 1})], [(1, {"a": "\ufffd"})])


def test_read_jsonl_missing_file_raises_at_once(tmp_path):
    with pytest.raises(InputNotFound, match=r"nope\.jsonl: no such examples file"):
        read_jsonl(tmp_path / "nope.jsonl", "examples file")
    with pytest.raises(ConfigError, match="no such file"):
        read_jsonl(tmp_path / "nope.jsonl", missing=ConfigError)


def test_describe_json_error():
    with pytest.raises(ValueError) as err:
        json.loads('{"a": }')
    assert describe_json_error(err.value) == "not valid JSON (Expecting value at line 1 column 7)"
    assert describe_json_error(err.value, in_line=True) == "not valid JSON (Expecting value at column 7)"


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path):
    f = tmp_path / "out.json"
    f.write_text("old")
    write_json_atomic(f, {"b": 1, "a": "\u00e9"})
    assert f.read_text(encoding="utf-8") == '{\n "a": "\u00e9",\n "b": 1\n}\n'
    write_atomic(f, b"\x00bytes")
    assert f.read_bytes() == b"\x00bytes"
    write_jsonl_atomic(tmp_path / "rows.jsonl", ({"i": i} for i in range(3)))
    assert [obj for _, obj in read_jsonl(tmp_path / "rows.jsonl")] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "rows.jsonl"]
    umask = os.umask(0)
    os.umask(umask)
    assert f.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() makes it, not mkstemp's 0600


def test_write_atomic_failure_keeps_the_old_file(tmp_path):
    f = tmp_path / "out.txt"
    f.write_text("old")

    def broken(fh):
        fh.write("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_atomic(f, broken)
    assert f.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_file_sha256(tmp_path):
    f = tmp_path / "b.bin"
    data = os.urandom(3 << 20)
    f.write_bytes(data)
    assert file_sha256(f) == hashlib.sha256(data).hexdigest()


def test_one_line():
    assert one_line(ValueError("a\n  b")) == "ValueError: a b"
    assert one_line(KeyError()) == "KeyError" == one_line(KeyError(), type_name=False)
    assert one_line(OSError("x" * 500), 20) == "OSError: xxxxxxxx..." and len(one_line(OSError("x" * 500), 20)) == 20
    assert one_line(RuntimeError("msg"), type_name=False) == "msg"
