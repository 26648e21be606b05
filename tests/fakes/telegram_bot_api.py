"""A FAKE Telegram Bot API server (not Telegram): real HTTP, real limits, for tests.

It speaks the Bot API's HTTP protocol on a loopback socket: multipart
``sendDocument``, ``getFile``, downloads from ``/file/bot<token>/<file_path>``,
``deleteMessage``, ``pinChatMessage``, ``getChat``, ``getMe``, with the
answers shaped like Telegram's (``{"ok": false, "error_code": ...,
"description": ..., "parameters": {"retry_after": n}}``). It enforces what
the real cloud API enforces and what backups must survive:

- uploads above 50 MB: 413 (as JSON, or as an nginx HTML page: ``html_413``);
- ``getFile`` of a file above 20 MB: 400 "file is too big" (bots cannot download it);
- more than one message per ``min_interval`` (1 s) to one chat: 429 with ``retry_after``;
- ``deleteMessage`` of a message older than 48 hours: 400 (on ``clock``, which tests advance);
- file ids are bound to the bot that uploaded them: another token gets 400 / 404;
- a bot can only post to the chats it was added to.

Faults are injected per method with :meth:`FakeBotApi.inject` ("ok" = no fault, "429", "500",
"502-html", "drop" = close the socket half-way through reading the request,
"413-json", "413-html"). Uploaded files are kept on disk, not in memory.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
import secrets
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.ports import free_port

UPLOAD_LIMIT = 50_000_000
DOWNLOAD_LIMIT = 20_000_000
DELETE_WINDOW = 48 * 3600
_ROUTE = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)$")
_FILE_ROUTE = re.compile(r"^/file/bot(?P<token>[^/]+)/(?P<path>.+)$")
HTML_413 = (
    b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    b"<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx/1.18.0"
    b"</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass
class StoredFile:
    file_id: str
    unique_id: str
    bot_id: int
    path: Path
    size: int


@dataclass
class Message:
    message_id: int
    chat_id: str
    date: float
    file_id: str
    file_name: str
    caption: str


@dataclass
class Chat:
    chat_id: str
    members: set[int] = field(default_factory=set)
    messages: dict[int, Message] = field(default_factory=dict)
    next_id: int = 1
    pinned: int | None = None
    last_accepted: float | None = None


class FakeBotApi:
    """State and limits of the fake; ``url`` is the base URL to configure as ``api_url``."""

    def __init__(self, files_dir: Path, *, min_interval: float = 1.0) -> None:
        self.files_dir = files_dir
        self.min_interval = min_interval
        self.upload_limit = UPLOAD_LIMIT
        self.download_limit = DOWNLOAD_LIMIT
        self.clock_offset = 0.0
        self.bots: dict[str, int] = {}
        self.chats: dict[str, Chat] = {}
        self.usernames: dict[str, str] = {}  # '@name' (lowercase) -> the chat's numeric id
        self.files: dict[str, StoredFile] = {}
        self.faults: dict[str, deque[str]] = defaultdict(deque)
        self.calls: dict[str, int] = defaultdict(int)
        self.rate_limited = 0
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self.url = ""

    # -- setup and inspection (tests) ------------------------------------------

    def now(self) -> float:
        """The fake's wall clock: real time plus what tests advanced."""
        return time.time() + self.clock_offset

    def advance(self, seconds: float) -> None:
        self.clock_offset += seconds

    def add_bot(self, chats: list[int | str]) -> str:
        """A new bot that is a member of ``chats``; returns its token."""
        bot_id = 1000 + next(self._ids)
        token = f"{bot_id}:{secrets.token_urlsafe(24)}"
        with self.lock:
            self.bots[token] = bot_id
            for chat in chats:
                self.chats.setdefault(str(chat), Chat(str(chat))).members.add(bot_id)
        return token

    def name_chat(self, chat: int | str, username: str) -> None:
        """Give a chat a public '@username' that resolves to it, as a channel's does."""
        with self.lock:
            self.usernames[username.lower()] = str(chat)

    def inject(self, method: str, *faults: str) -> None:
        """Answer the next calls of ``method`` with these faults, in order."""
        with self.lock:
            self.faults[method].extend(faults)

    def messages(self, chat: int | str) -> list[Message]:
        with self.lock:
            return sorted(self.chats[str(chat)].messages.values(), key=lambda m: m.message_id)

    def file_bytes(self, file_id: str) -> bytes:
        return self.files[file_id].path.read_bytes()

    def tamper(self, file_id: str, offset: int = 100) -> None:
        """Flip one byte of a stored file (same size, different content)."""
        path = self.files[file_id].path
        data = bytearray(path.read_bytes())
        data[offset % len(data)] ^= 0xFF
        path.write_bytes(bytes(data))

    def lose(self, file_id: str) -> None:
        """Make a stored file vanish, as if its message had been deleted."""
        with self.lock:
            stored = self.files.pop(file_id)
        stored.path.unlink(missing_ok=True)

    # -- the API ----------------------------------------------------------------

    def handle(self, token: str, method: str, params: dict[str, Any]) -> tuple[int, Any]:
        bot_id = self.bots.get(token)
        if bot_id is None:
            return _error(401, "Unauthorized")
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return _error(404, "Not Found")
        result: tuple[int, Any] = handler(bot_id, params)
        return result

    def _chat_for(self, bot_id: int, params: dict[str, Any]) -> Chat | tuple[int, Any]:
        wanted = str(params.get("chat_id", ""))
        chat = self.chats.get(self.usernames.get(wanted.lower(), wanted))
        if chat is None or bot_id not in chat.members:
            return _error(400, "Bad Request: chat not found")
        return chat

    def _api_getMe(self, bot_id: int, params: dict[str, Any]) -> tuple[int, Any]:
        return _ok({"id": bot_id, "is_bot": True, "first_name": "fake", "username": f"b{bot_id}"})

    def _api_sendDocument(self, bot_id: int, params: dict[str, Any]) -> tuple[int, Any]:
        chat = self._chat_for(bot_id, params)
        if not isinstance(chat, Chat):
            return chat
        upload = params.get("document")
        if not isinstance(upload, tuple):
            return _error(400, "Bad Request: there is no document in the request")
        name, data = upload
        with self.lock:
            real_now = time.monotonic()
            if chat.last_accepted is not None and real_now - chat.last_accepted < self.min_interval:
                self.rate_limited += 1
                wait = math.ceil(self.min_interval - (real_now - chat.last_accepted))
                return _error(
                    429, f"Too Many Requests: retry after {wait}", {"retry_after": max(1, wait)}
                )
            chat.last_accepted = real_now
            number = next(self._ids)
            file_id = f"BQ{bot_id}x{number}x{secrets.token_urlsafe(16)}"
            path = self.files_dir / f"file_{number}"
            path.write_bytes(data)
            self.files[file_id] = StoredFile(file_id, f"u{number}", bot_id, path, len(data))
            message = Message(
                chat.next_id, chat.chat_id, self.now(), file_id, name, params.get("caption", "")
            )
            chat.messages[message.message_id] = message
            chat.next_id += 1
        return _ok(self._message_json(message))

    def _message_json(self, message: Message) -> dict[str, Any]:
        stored = self.files.get(message.file_id)
        return {
            "message_id": message.message_id,
            "date": int(message.date),
            "chat": {"id": _chat_id_json(message.chat_id), "type": "channel"},
            "caption": message.caption,
            "document": {
                "file_id": message.file_id,
                "file_unique_id": stored.unique_id if stored else "gone",
                "file_name": message.file_name,
                "file_size": stored.size if stored else 0,
            },
        }

    def _api_getFile(self, bot_id: int, params: dict[str, Any]) -> tuple[int, Any]:
        stored = self.files.get(str(params.get("file_id", "")))
        if stored is None or stored.bot_id != bot_id:
            return _error(400, "Bad Request: wrong file_id or the file is temporarily unavailable")
        if stored.size > self.download_limit:
            return _error(400, "Bad Request: file is too big")
        return _ok(
            {
                "file_id": stored.file_id,
                "file_unique_id": stored.unique_id,
                "file_size": stored.size,
                "file_path": f"documents/{stored.path.name}",
            }
        )

    def _api_deleteMessage(self, bot_id: int, params: dict[str, Any]) -> tuple[int, Any]:
        chat = self._chat_for(bot_id, params)
        if not isinstance(chat, Chat):
            return chat
        with self.lock:
            message = chat.messages.get(int(params.get("message_id", 0)))
            if message is None:
                return _error(400, "Bad Request: message to delete not found")
            if self.now() - message.date > DELETE_WINDOW:
                return _error(400, "Bad Request: message can't be deleted for everyone")
            del chat.messages[message.message_id]
            if chat.pinned == message.message_id:
                chat.pinned = None
        with contextlib.suppress(KeyError):
            self.lose(message.file_id)
        return _ok(True)

    def _api_pinChatMessage(self, bot_id: int, params: dict[str, Any]) -> tuple[int, Any]:
        chat = self._chat_for(bot_id, params)
        if not isinstance(chat, Chat):
            return chat
        message_id = int(params.get("message_id", 0))
        if message_id not in chat.messages:
            return _error(400, "Bad Request: message to pin not found")
        chat.pinned = message_id
        return _ok(True)

    def _api_getChat(self, bot_id: int, params: dict[str, Any]) -> tuple[int, Any]:
        chat = self._chat_for(bot_id, params)
        if not isinstance(chat, Chat):
            return chat
        body: dict[str, Any] = {"id": _chat_id_json(chat.chat_id), "type": "channel"}
        if chat.pinned is not None and chat.pinned in chat.messages:
            body["pinned_message"] = self._message_json(chat.messages[chat.pinned])
        return _ok(body)

    def download(self, token: str, file_path: str) -> tuple[int, Path | None]:
        bot_id = self.bots.get(token)
        name = file_path.rsplit("/", 1)[-1]
        for stored in list(self.files.values()):
            if stored.path.name == name:
                if stored.bot_id != bot_id:
                    return 404, None
                return 200, stored.path
        return 404, None


def _chat_id_json(chat_id: str) -> int | str:
    return int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id


def _ok(result: Any) -> tuple[int, Any]:
    return 200, {"ok": True, "result": result}


def _error(
    code: int, description: str, parameters: dict[str, Any] | None = None
) -> tuple[int, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return code, body


def _parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        return {}
    fields: dict[str, Any] = {}
    for chunk in body.split(b"--" + match.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        data = data[:-2] if data.endswith(b"\r\n") else data
        disposition = head.decode("utf-8", "replace")
        name = re.search(r'name="([^"]*)"', disposition)
        filename = re.search(r'filename="([^"]*)"', disposition)
        if name is None:
            continue
        if filename is not None:
            fields[name.group(1)] = (filename.group(1), data)
        else:
            fields[name.group(1)] = data.decode()
    return fields


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode())

    def _read_body(self, limit: int | None = None) -> bytes | None:
        """The request body; None if the client's connection was dropped on purpose."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if limit is not None:
            self.rfile.read(min(length, limit))
            return None
        return self.rfile.read(length)

    def _drop(self) -> None:
        """Read half the upload, then cut the connection without an answer."""
        length = int(self.headers.get("Content-Length") or 0)
        self._read_body(limit=max(1, length // 2))
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        fake = self.server.fake
        url = urlparse(self.path)
        file_route = _FILE_ROUTE.match(url.path)
        if file_route is not None:
            status, path = fake.download(file_route["token"], file_route["path"])
            if path is None:
                self._send_json(
                    status, {"ok": False, "error_code": 404, "description": "Not Found"}
                )
            else:
                self._send(200, path.read_bytes(), "application/octet-stream")
            return
        route = _ROUTE.match(url.path)
        if route is None:
            self._read_body()
            self._send_json(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        method = route["method"]
        with fake.lock:
            fake.calls[method] += 1
            fault = fake.faults[method].popleft() if fake.faults[method] else None
        if fault == "ok":
            fault = None
        length = int(self.headers.get("Content-Length") or 0)
        if fault == "drop":
            self._drop()
            return
        if fault is None and length > fake.upload_limit:
            fault = "413-json"
        body = self._read_body()
        if fault == "429":
            self._send_json(*_error(429, "Too Many Requests: retry after 1", {"retry_after": 1}))
            return
        if fault == "500":
            self._send_json(*_error(500, "Internal Server Error"))
            return
        if fault == "502-html":
            self._send(502, b"<html><body>502 Bad Gateway</body></html>", "text/html")
            return
        if fault == "413-json":
            self._send_json(*_error(413, "Request Entity Too Large"))
            return
        if fault == "413-html":
            self._send(413, HTML_413, "text/html")
            return
        params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(url.query).items()}
        content_type = self.headers.get("Content-Type", "")
        if body and content_type.startswith("multipart/form-data"):
            params.update(_parse_multipart(content_type, body))
        elif body and content_type.startswith("application/json"):
            params.update(json.loads(body))
        elif body:
            params.update({k: v[-1] for k, v in parse_qs(body.decode()).items()})
        status, answer = fake.handle(route["token"], method, params)
        self._send_json(status, answer)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeBotApi


@contextlib.contextmanager
def running_fake_bot_api(files_dir: Path, *, min_interval: float = 1.0) -> Iterator[FakeBotApi]:
    """Serve a :class:`FakeBotApi` on 127.0.0.1:<free port> until the block ends."""
    files_dir.mkdir(parents=True, exist_ok=True)
    fake = FakeBotApi(files_dir, min_interval=min_interval)
    server = _Server(("127.0.0.1", free_port()), _Handler)
    server.fake = fake
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-bot-api", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
