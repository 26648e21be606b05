"""The CLI as a new user meets it: `--version`, and a controller that refuses, fails or
is absent is one `error:` line on stderr with exit 1, never a traceback."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from skylift.cli import main
from tests.ports import free_port


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr("sys.argv", ["skylift", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    code = exited.value.code
    return code if isinstance(code, int) else 0


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 500
    body = b'{"error": "boom\\n  at line 2"}'

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering(request: pytest.FixtureRequest) -> Iterator[int]:
    status: int = request.param
    handler = type("Handler", (_Answer,), {"status": status})
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def config_on(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "skylift.yaml"
    replica_port = free_port()  # never the default range, which a free port may fall in
    path.write_text(
        f"api: {{listen: '127.0.0.1:{port}'}}\n"
        f"services:\n  web:\n    frontend: {free_port()}\n"
        "    backend: {command: 'app --port {port}', "
        f"ports: {{start: {replica_port}, end: {replica_port}}}}}\n",
        encoding="utf-8",
    )
    return path


def test_version_prints_the_package_version(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib.metadata import version

    assert run_cli(monkeypatch, "--version") == 0
    assert capsys.readouterr().out.strip() == f"skylift {version('skylift')}"


@pytest.mark.parametrize(
    ("answering", "expect"),
    [(401, "refused this CLI's token"), (500, "HTTP 500: boom at line 2")],
    indirect=["answering"],
)
def test_an_api_error_is_one_clear_line(
    answering: int,
    expect: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = config_on(tmp_path, answering)
    assert run_cli(monkeypatch, "status", "-c", str(config)) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and expect in err


def test_no_controller_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_on(tmp_path, free_port())
    assert run_cli(monkeypatch, "explain", "-c", str(config), "web") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no skylift controller answers" in err, err
