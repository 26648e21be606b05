"""A small Telegram Bot API client for backups, on httpx.

It keeps going through what the Bot API does under load: it waits the
``retry_after`` a 429 names, backs off on 5xx and dropped connections, paces
messages to one chat (``min_interval``), and reports 413 as
:class:`PartTooLarge` whether the server says it in JSON or in an HTML page.
The token lives only inside the request URL: it is never in a message,
a log line or a ``repr`` (httpx's own log lines are redacted too).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import structlog

from skylift.backup.errors import PartMissing, PartTooLarge, TelegramError, TelegramUnavailable

log = structlog.get_logger("skylift.backup")
_BOT_IN_URL = re.compile(r"/(file/)?bot[^/\s]+")
BACKOFF_BASE, BACKOFF_CAP = 0.5, 30.0
MAX_RATE_LIMIT_WAITS = 50


class _RedactTokens(logging.Filter):
    """httpx logs request URLs, which hold the bot token: mask it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/bot" in message:
            record.msg, record.args = _BOT_IN_URL.sub(r"/\1bot***", message), None
        return True


for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_RedactTokens())


@dataclass(frozen=True)
class SentDocument:
    message_id: int
    file_id: str
    file_size: int | None
    date: int


@dataclass(frozen=True)
class RemoteFile:
    file_id: str
    file_path: str
    file_size: int | None


class BotApi:
    """One bot on one Bot API server. Synchronous; one request at a time."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        timeout: float = 120.0,
        max_retries: int = 8,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base = api_url.rstrip("/")
        self._token = token
        self._max_retries = max_retries
        self._min_interval = min_interval
        self._clock = clock
        self._sleep = sleep
        self._last_sent: dict[str, float] = {}
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"BotApi({self._base!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BotApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- methods -----------------------------------------------------------

    def send_document(
        self, chat_id: int | str, path: Path, filename: str, caption: str = ""
    ) -> SentDocument:
        """Upload one file as a document; returns once Telegram acknowledged it."""

        def files() -> dict[str, Any]:
            return {"document": (filename, path.open("rb"), "application/octet-stream")}

        data = {"chat_id": str(chat_id), "caption": caption, "disable_notification": "true"}
        result = self._call("sendDocument", data=data, files=files, chat=str(chat_id))
        document = result.get("document") if isinstance(result, dict) else None
        if not isinstance(document, dict) or "file_id" not in document:
            raise TelegramError("sendDocument answered without a document: not acknowledged")
        return SentDocument(
            message_id=int(result["message_id"]),
            file_id=str(document["file_id"]),
            file_size=document.get("file_size"),
            date=int(result.get("date", 0)),
        )

    def get_file(self, file_id: str) -> RemoteFile:
        result = self._call("getFile", data={"file_id": file_id})
        if not isinstance(result, dict) or not result.get("file_path"):
            raise PartMissing(f"getFile gave no file_path for file id {file_id[:12]}...")
        return RemoteFile(file_id, str(result["file_path"]), result.get("file_size"))

    def delete_message(self, chat_id: int | str, message_id: int) -> str | None:
        """Delete one message; None if done, else the Bot API's reason (e.g. older than 48h)."""
        try:
            self._call(
                "deleteMessage", data={"chat_id": str(chat_id), "message_id": str(message_id)}
            )
        except TelegramError as exc:
            if exc.status == 400:
                return str(exc)
            raise
        return None

    def pin_message(self, chat_id: int | str, message_id: int) -> None:
        self._call(
            "pinChatMessage",
            data={
                "chat_id": str(chat_id),
                "message_id": str(message_id),
                "disable_notification": "true",
            },
        )

    def get_chat(self, chat_id: int | str) -> dict[str, Any]:
        result = self._call("getChat", data={"chat_id": str(chat_id)})
        return result if isinstance(result, dict) else {}

    def download(self, remote: RemoteFile, dest: IO[bytes]) -> int:
        """Stream a file into ``dest`` (rewound on each retry); returns its size."""
        url = f"{self._base}/file/bot{self._token}/{remote.file_path}"
        attempt = 0
        while True:
            dest.seek(0)
            dest.truncate()
            try:
                with self._http.stream("GET", url) as response:
                    if response.status_code == 200:
                        size = 0
                        for block in response.iter_bytes(256 * 1024):
                            dest.write(block)
                            size += len(block)
                        return size
                    response.read()
                    status = response.status_code
            except httpx.TransportError as exc:
                status, failure = None, f"connection failed ({type(exc).__name__})"
            else:
                failure = f"HTTP {status}"
                if status in (400, 403, 404):
                    raise PartMissing(
                        f"download of file id {remote.file_id[:12]}... refused ({failure}): "
                        "the file is gone or belongs to another bot"
                    )
            attempt = self._backoff("download", failure, attempt)

    # -- plumbing ----------------------------------------------------------

    def _call(
        self,
        method: str,
        *,
        data: Mapping[str, str],
        files: Callable[[], dict[str, Any]] | None = None,
        chat: str | None = None,
    ) -> Any:
        url = f"{self._base}/bot{self._token}/{method}"
        attempt = rate_waits = 0
        while True:
            if chat is not None:
                self._pace(chat)
            opened = files() if files else None
            try:
                response = self._http.post(url, data=dict(data), files=opened)
            except httpx.TransportError as exc:
                attempt = self._backoff(
                    method, f"connection failed ({type(exc).__name__})", attempt
                )
                continue
            finally:
                for value in (opened or {}).values():
                    value[1].close()
            if chat is not None:
                self._last_sent[chat] = self._clock()
            status = response.status_code
            body = _json(response)
            code = body.get("error_code", status) if body else status
            if status == 413 or code == 413:
                raise PartTooLarge(
                    f"{method}: the Bot API refused the upload as too large (HTTP 413): lower "
                    "backup.telegram.part_size below the server's upload limit",
                    status=413,
                )
            if status == 429 or code == 429:
                rate_waits += 1
                wait = _retry_after(body, response)
                if rate_waits > MAX_RATE_LIMIT_WAITS:
                    raise TelegramUnavailable(
                        f"{method}: still rate limited after {rate_waits - 1} waits; rerun "
                        "later (acknowledged parts are kept and reused)",
                        status=429,
                    )
                log.warning("telegram rate limited", method=method, retry_after=wait)
                self._sleep(wait)
                continue
            if status >= 500:
                attempt = self._backoff(method, f"HTTP {status}", attempt)
                continue
            if not body:
                raise TelegramError(
                    f"{method}: HTTP {status} without a Bot API answer: check api_url",
                    status=status,
                )
            if body.get("ok") is True:
                return body.get("result")
            raise TelegramError(_refusal(method, status, body), status=status)

    def _pace(self, chat: str) -> None:
        last = self._last_sent.get(chat)
        if last is not None:
            wait = self._min_interval - (self._clock() - last)
            if wait > 0:
                self._sleep(wait)

    def _backoff(self, method: str, failure: str, attempt: int) -> int:
        attempt += 1
        if attempt > self._max_retries:
            raise TelegramUnavailable(
                f"{method}: {failure}, still failing after {self._max_retries} retries; check "
                "api_url and the network, then rerun (acknowledged parts are reused)"
            )
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
        log.warning(
            "telegram request failed, retrying",
            method=method,
            failure=failure,
            attempt=attempt,
            delay=delay,
        )
        self._sleep(delay)
        return attempt


def _json(response: httpx.Response) -> dict[str, Any]:
    """The Bot API's JSON body, or {} when a proxy answered with HTML or nothing."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(body: Mapping[str, Any], response: httpx.Response) -> float:
    params = body.get("parameters")
    if isinstance(params, dict) and isinstance(params.get("retry_after"), int | float):
        return max(0.0, float(params["retry_after"]))
    header = response.headers.get("Retry-After", "")
    return float(header) if header.replace(".", "", 1).isdigit() else 1.0


def _refusal(method: str, status: int, body: Mapping[str, Any]) -> str:
    description = _BOT_IN_URL.sub("/bot***", str(body.get("description", "no description")))
    hint = ""
    if status == 401:
        hint = ": the bot token was rejected; check the region's bot_token_env / bot_token_file"
    elif "chat not found" in description or status == 403:
        hint = ": check the region's chat_id and that this bot is a member of that chat"
    return f"{method} refused (HTTP {status}): {description}{hint}"
