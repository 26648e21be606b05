"""The CLI's way to talk to a running controller over its local API."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from skylift.api.token import read_token
from skylift.config import LoadedConfig


class ControllerUnreachable(RuntimeError):
    """No controller answers on the configured API address."""


class ApiError(RuntimeError):
    """The controller answered with an error; the message is one line that says what to do."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def api_base(loaded: LoadedConfig) -> str:
    """``https://`` when the controller serves its API with TLS (a certificate in config)."""
    api = loaded.config.api
    return f"{'https' if api.tls_cert_file else 'http'}://{api.listen}"


def api_verify(loaded: LoadedConfig) -> ssl.SSLContext | bool:
    """Verify the controller's certificate against ``api.ca_file`` (else the system CAs)."""
    api = loaded.config.api
    if not api.tls_cert_file:
        return True  # plain HTTP on loopback: nothing to verify
    if api.ca_file:
        return ssl.create_default_context(cafile=str(loaded.base_dir / api.ca_file))
    return ssl.create_default_context()


class ApiClient:
    """Thin httpx wrapper that adds the bearer token and turns errors into messages."""

    def __init__(self, loaded: LoadedConfig, timeout: float = 10.0) -> None:
        self.base = api_base(loaded)
        self._state_dir = loaded.state_dir
        self._client = httpx.Client(
            base_url=self.base, timeout=timeout, trust_env=False, verify=api_verify(loaded)
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if "Authorization" not in self._client.headers:
            # read late: a controller started a moment ago writes its token on start-up
            token = read_token(self._state_dir)
            if token:
                self._client.headers["Authorization"] = f"Bearer {token}"
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ControllerUnreachable(
                f"no skylift controller answers on {self.base} ({exc.__class__.__name__}); "
                "start one with `skylift up -c FILE`"
            ) from None
        if response.status_code >= 400:
            raise ApiError(response.status_code, self._explain(method, path, response))
        return response.json()

    def _explain(self, method: str, path: str, response: httpx.Response) -> str:
        try:
            body = response.json()
            message = str(body.get("error", response.text)) if isinstance(body, dict) else ""
        except ValueError:
            message = response.text.strip()
        message = " ".join(message.split())[:300] or response.reason_phrase
        status = response.status_code
        if status == 401:
            return (
                f"the controller on {self.base} refused this CLI's token ({message}); use the "
                f"config that started it, so the token is read from {self._state_dir}"
            )
        if status >= 500:
            return (
                f"the controller on {self.base} failed on {method} {path} (HTTP {status}: "
                f"{message}); see its log or `skylift events`"
            )
        return message

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    # -- what an operator changes on a running controller --------------------

    def apply(self, path: str, *, dry_run: bool) -> Any:
        """``skylift apply``: the controller reads ``path`` itself and applies (or diffs) it."""
        return self.post("/api/v1/apply", json={"path": path, "dry_run": dry_run})

    def set_autoscale_paused(self, service: str, paused: bool) -> Any:
        """``skylift autoscale pause|resume``."""
        return self.post(f"/api/v1/services/{service}/autoscale", json={"paused": paused})
