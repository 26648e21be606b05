"""Other regions' token keys, so that an access token from any region verifies here.

Why fetch rather than only read a directory: a region's keys rotate, and a
fetched JWKS follows a rotation without anyone copying files. Peers' JWKS are
fetched through their edges (selector header naming the region) at start,
every ``refresh`` seconds, and at once (at most every ``min_gap`` seconds) for
an unknown ``kid``. Why also a directory (``PEER_JWKS_DIR``): the keys are
needed most exactly when their region is down (a failed-over user's token),
so the last good JWKS of each peer is written there and read back at start;
the orchestration may also seed it. A key is accepted only if its ``kid`` is
its RFC 7638 thumbprint, and it verifies only tokens whose issuer is the
region it came from.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric import ec

from skylift.platform import peers
from skylift.platform.keys import thumbprint

log = structlog.get_logger("skylift.platform")

JWKS_PATH = "/.well-known/jwks.json"


def parse_jwks(body: Mapping[str, Any], region: str) -> dict[str, ec.EllipticCurvePublicKey]:
    """kid -> key of every usable ES256 key; a JWKS naming another region gives nothing."""
    if body.get("region", region) != region:
        return {}
    found: dict[str, ec.EllipticCurvePublicKey] = {}
    keys = body.get("keys")
    for jwk in keys if isinstance(keys, list) else []:
        if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            continue
        if jwk.get("alg", "ES256") != "ES256":
            continue
        try:
            key = jwt.PyJWK(jwk, algorithm="ES256").key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        if isinstance(key, ec.EllipticCurvePublicKey) and jwk.get("kid") == thumbprint(key):
            found[str(jwk["kid"])] = key
    return found


class PeerKeys:
    """kid -> (public key, region) of every peer region, kept fresh in the background."""

    def __init__(
        self,
        region: str,
        edges: Mapping[str, str],
        client: httpx.AsyncClient,
        cache_dir: Path | None = None,
        refresh: float = 60.0,
        min_gap: float = 1.0,
    ) -> None:
        self._peers = {name: edge for name, edge in edges.items() if name != region}
        self._client, self._dir = client, cache_dir
        self._refresh, self._min_gap = refresh, min_gap
        self._by_region: dict[str, dict[str, ec.EllipticCurvePublicKey]] = {}
        self._last_fetch = float("-inf")
        self._lock = asyncio.Lock()
        if cache_dir is not None:
            for name in self._peers:
                path = cache_dir / f"{name}.json"
                if path.is_file():
                    try:
                        self._by_region[name] = parse_jwks(json.loads(path.read_text()), name)
                    except (OSError, ValueError):
                        log.warning("peer_jwks_cache_unreadable", region=name)

    def known(self) -> dict[str, bool]:
        """Per peer region: whether its keys are known (reported by /readyz, not gating it)."""
        return {name: bool(self._by_region.get(name)) for name in self._peers}

    def lookup(self, kid: str) -> tuple[ec.EllipticCurvePublicKey, str] | None:
        for name, keys in self._by_region.items():
            if kid in keys:
                return keys[kid], name
        return None

    async def resolve(self, kid: str) -> tuple[ec.EllipticCurvePublicKey, str] | None:
        """The key for ``kid``, fetching every peer once more if it is unknown (throttled)."""
        found = self.lookup(kid)
        if found is not None:
            return found
        async with self._lock:
            if time.monotonic() - self._last_fetch >= self._min_gap:
                await self.fetch_all()
        return self.lookup(kid)

    async def fetch_all(self) -> None:
        self._last_fetch = time.monotonic()
        await asyncio.gather(*(self._fetch(name, edge) for name, edge in self._peers.items()))

    async def run(self) -> None:
        """Until cancelled: fetch every peer's JWKS now and every ``refresh`` seconds.

        While a peer's keys are still unknown (it started after us) every 2 s instead.
        """
        while True:
            async with self._lock:
                await self.fetch_all()
            missing = any(not self._by_region.get(name) for name in self._peers)
            await asyncio.sleep(min(self._refresh, 2.0) if missing else self._refresh)

    async def _fetch(self, name: str, edge: str) -> None:
        try:
            response = await self._client.get(
                f"http://{edge}{JWKS_PATH}", headers={peers.SELECTOR: name}
            )
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.info("peer_jwks_unavailable", region=name, error=type(exc).__name__)
            return  # keep the last good keys: this is when they matter most
        keys = parse_jwks(body, name) if isinstance(body, dict) else {}
        if not keys:
            log.warning("peer_jwks_rejected", region=name)  # another region answered, or junk
            return
        if keys.keys() != self._by_region.get(name, {}).keys():
            self._by_region[name] = keys
            if self._dir is not None:
                await asyncio.to_thread(_write_atomic, self._dir / f"{name}.json", body)
            log.info("peer_jwks_updated", region=name, kids=sorted(keys))


def _write_atomic(path: Path, body: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(body))
    tmp.replace(path)
