"""The daemon's log lines: JSON off a terminal, a human line on one, the request id of the call on
each line, secrets masked whatever carried them, prompts only when ``log_content`` says so."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from stackd.logs import content, records
from stackd.logs.request_id import REQUEST_ID, accepted, upstream_id

CANARY = "sk-canary-log-7f3e9a21c4"
TOKEN = "stackd-token-canary-0123456789"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    """The root logger as it was after the test: handlers, level and the content switch."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    content.enable(False)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_off_a_terminal_each_record_is_one_json_object_with_its_call_s_request_id(
    root: logging.Logger,
) -> None:
    stream = io.StringIO()
    records.configure(stream=stream)
    log = logging.getLogger("stackd.test")
    log.info("outside any call")
    token = REQUEST_ID.set("req-42")
    try:
        log.warning("switch %s refused", "embedded", extra={"stack": "embedded"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed")
    finally:
        REQUEST_ID.reset(token)
    first, second, third = lines(stream)
    assert "request_id" not in first and first["msg"] == "outside any call"
    assert second["request_id"] == "req-42" and second["level"] == "WARNING"
    assert second["msg"] == "switch embedded refused" and second["stack"] == "embedded"
    assert second["logger"] == "stackd.test" and str(second["ts"]).endswith("Z")
    assert third["request_id"] == "req-42" and "ValueError: boom" in str(third["exc"])


def test_on_a_terminal_a_line_is_for_a_person(root: logging.Logger) -> None:
    stream = Terminal()
    records.configure(stream=stream)
    token = REQUEST_ID.set("req-7")
    try:
        logging.getLogger("stackd.manager").info("switched to %s", "embedded")
    finally:
        REQUEST_ID.reset(token)
    line = stream.getvalue().strip()
    assert line.endswith("INFO    stackd.manager [req-7] switched to embedded"), line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


@pytest.mark.parametrize("stream", [io.StringIO(), Terminal()], ids=["json", "human"])
def test_a_secret_is_masked_wherever_it_appears(root: logging.Logger, stream: io.StringIO) -> None:
    records.configure(secrets=[CANARY, TOKEN, "short"], stream=stream)
    log = logging.getLogger("stackd.test")
    log.error("upstream said: bad key %s; a short word stays", CANARY)
    log.info(f"header Bearer {TOKEN}", extra={"authorization": f"Bearer {TOKEN}"})
    try:
        raise RuntimeError("https://user:" + CANARY + "@api.example/v1 refused")
    except RuntimeError:
        log.exception("call failed")
    text = stream.getvalue()
    assert CANARY not in text and TOKEN not in text
    assert f"bad key {records.REDACTED}; a short word stays" in text  # too short a value is no secret
    assert f"header Bearer {records.REDACTED}" in text
    assert f"user:{records.REDACTED}@api.example" in text  # in the traceback


def test_prompts_are_not_logged_unless_the_setting_enables_it(root: logging.Logger) -> None:
    stream = io.StringIO()
    messages = [{"role": "user", "content": "the secret plan"}]
    records.configure(stream=stream, level=logging.DEBUG)  # a verbose root writes no prompt either
    content.exchange(messages, "gemma", "the answer")
    assert "secret plan" not in stream.getvalue() and "the answer" not in stream.getvalue()
    records.configure(stream=stream, log_content=True)
    content.exchange(messages, "gemma", "the answer")
    [line] = lines(stream)
    assert line["messages"] == messages and line["answer"] == "the answer"
    assert line["logger"] == "stackd.content"


def test_a_caller_s_request_id_is_kept_only_when_it_is_safe_in_a_log_line() -> None:
    assert accepted(b"trace-01HZX.9:a/b+c=") == "trace-01HZX.9:a/b+c="
    for unusable in (None, b"", b"two words", b"line\nbreak", b'quote"', b"x" * 129, "é".encode()):
        new = accepted(unusable)
        assert len(new) == 32 and int(new, 16) >= 0
    assert accepted(None) != accepted(None)


@pytest.mark.parametrize(
    ("request_id", "sent"),
    [
        ("0f8e4a3c9b2d4e6f8a1b2c3d4e5f6a7b", True),  # stackd's own
        ("0F8E4A3C-9B2D-4E6F-8A1B-2C3D4E5F6A7B", True),  # Envoy's
        ("trace-42", False),  # llama.cpp's Python server would answer 400
        ("0f8e4a3c9b2d4e6f8a1b2c3d4e5f6a7", False),
        (None, False),
    ],
)
def test_only_a_uuid_form_goes_upstream(request_id: str | None, sent: bool) -> None:
    token = REQUEST_ID.set(request_id)
    try:
        assert upstream_id() == (request_id if sent else None)
    finally:
        REQUEST_ID.reset(token)
