"""The Bot API client on an in-memory transport: retries, pacing, 413, and no token leaks."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from skylift.backup.errors import PartMissing, PartTooLarge, TelegramError, TelegramUnavailable
from skylift.backup.telegram import BotApi, RemoteFile

TOKEN = "123456:SECRET-token-value"
OK = {
    "ok": True,
    "result": {"message_id": 7, "date": 1, "document": {"file_id": "F1", "file_size": 5}},
}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def client(
    answers: list[Callable[[httpx.Request], httpx.Response]], clock: Clock, **kw: float
) -> tuple[BotApi, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        request.read()
        return answers.pop(0)(request)

    bot = BotApi(
        "https://api.example",
        TOKEN,
        clock=clock,
        sleep=clock.sleep,
        transport=httpx.MockTransport(handler),
        max_retries=int(kw.get("max_retries", 3)),
        min_interval=kw.get("min_interval", 1.0),
    )
    return bot, seen


def json_answer(status: int, body: object) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(status, json=body)


def drop(request: httpx.Request) -> httpx.Response:
    raise httpx.RemoteProtocolError(
        "Server disconnected without sending a response.", request=request
    )


@pytest.fixture
def part(tmp_path: Path) -> Path:
    path = tmp_path / "part"
    path.write_bytes(b"hello")
    return path


def test_429_waits_retry_after_5xx_and_drops_back_off_then_the_upload_is_acknowledged(
    part: Path,
) -> None:
    clock = Clock()
    too_many = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    }
    bot, seen = client(
        [
            json_answer(429, too_many),
            drop,
            json_answer(502, {"ok": False}),
            lambda _: httpx.Response(503, text="<html>busy</html>"),
            json_answer(200, OK),
        ],
        clock,
    )
    sent = bot.send_document(-1, part, "p0")
    assert (sent.message_id, sent.file_id, sent.file_size) == (7, "F1", 5)
    assert clock.sleeps[0] == 3  # exactly what Telegram asked for
    assert clock.sleeps[1:] == [0.5, 1.0, 2.0]  # exponential back-off
    assert len(seen) == 5 and all(b"hello" in r.content for r in seen)  # the file is re-sent whole


def test_retries_run_out_with_a_message_that_says_what_to_do_and_hides_the_token(
    part: Path,
) -> None:
    bot, _ = client([drop] * 4, Clock())
    with pytest.raises(TelegramUnavailable) as err:
        bot.send_document(-1, part, "p0")
    assert "still failing after 3 retries" in str(err.value) and "rerun" in str(err.value)
    assert TOKEN not in str(err.value) and "SECRET" not in repr(err.value)
    assert TOKEN not in str(err.value.__context__)


@pytest.mark.parametrize(
    "answer",
    [
        json_answer(
            413, {"ok": False, "error_code": 413, "description": "Request Entity Too Large"}
        ),
        lambda _: httpx.Response(
            413, text="<html><title>413 Request Entity Too Large</title></html>"
        ),
    ],
    ids=["json", "html"],
)
def test_413_as_json_or_html_is_part_too_large(
    part: Path, answer: Callable[[httpx.Request], httpx.Response]
) -> None:
    bot, _ = client([answer], Clock())
    with pytest.raises(PartTooLarge, match=r"lower backup\.telegram\.part_size"):
        bot.send_document(-1, part, "p0")


def test_messages_to_one_chat_are_paced(part: Path) -> None:
    clock = Clock()
    bot, _ = client([json_answer(200, OK)] * 3, clock, min_interval=1.0)
    bot.send_document(-1, part, "a")
    clock.now += 0.25
    bot.send_document(-1, part, "b")
    bot.send_document(-2, part, "c")  # another chat: no wait
    assert clock.sleeps == [0.75]


def test_refusals_are_permanent_and_say_what_to_check(part: Path) -> None:
    bot, seen = client(
        [json_answer(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})], Clock()
    )
    with pytest.raises(TelegramError, match="bot token was rejected") as err:
        bot.send_document(-1, part, "a")
    assert len(seen) == 1 and TOKEN not in str(err.value)
    bot, _ = client(
        [
            json_answer(
                400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
            )
        ],
        Clock(),
    )
    with pytest.raises(TelegramError, match="this bot is a member of that chat"):
        bot.send_document(-1, part, "a")


def test_download_of_a_gone_file_is_part_missing_and_repr_hides_the_token() -> None:
    bot, _ = client([json_answer(404, {"ok": False})], Clock())
    with pytest.raises(PartMissing, match="gone or belongs to another bot"):
        bot.download(RemoteFile("FILEID123456789", "documents/x", 3), io.BytesIO())
    assert TOKEN not in repr(bot)


def test_httpx_log_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="httpx"):
        logging.getLogger("httpx").info(
            'HTTP Request: POST %s "HTTP/1.1 200 OK"',
            f"https://api.example/bot{TOKEN}/sendDocument",
        )
    assert TOKEN not in caplog.text and "/bot***/sendDocument" in caplog.text
