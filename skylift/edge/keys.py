"""Token keys for the edge: every region's JWKS -> ``kid`` -> SPKI PEM.

HAProxy's ``jwt_verify`` takes a public key PEM (SPKI) per key and reads it at
start only, so the edge pins one ES256 verification per ``kid`` and a new key
(a rotation in any region) means a hitless reload with the new mapping. The
platform publishes its keys at ``/.well-known/jwks.json`` (the signing key and
the one before it), so a token signed just before a rotation keeps verifying.

A region whose JWKS cannot be fetched keeps its previous keys: an unreachable
region must not invalidate its users' tokens at every other edge.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

import httpx
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from jwt.exceptions import InvalidKeyError

from skylift.edge.render import SELECTOR_HEADER
from skylift.edge.spec import EdgeSpec
from skylift.lb.errors import HAProxyError

log = structlog.get_logger(__name__)

JWKS_PATH = "/.well-known/jwks.json"


def jwk_to_pem(jwk: Mapping[str, Any]) -> str:
    """An EC P-256 public JWK as an SPKI PEM; ValueError for anything else."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError(f"not an EC P-256 key: kty={jwk.get('kty')!r} crv={jwk.get('crv')!r}")
    if jwk.get("alg", "ES256") != "ES256" or "d" in jwk:
        raise ValueError("only public ES256 keys are accepted")
    try:
        key = ECAlgorithm.from_jwk(json.dumps(dict(jwk)))
    except InvalidKeyError as exc:
        raise ValueError(f"invalid JWK: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("a private key was published as a JWK")
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def jwks_to_pems(document: Mapping[str, Any]) -> dict[str, str]:
    """``{"keys": [...]}`` -> kid -> PEM; keys without a kid or of another type are skipped."""
    out: dict[str, str] = {}
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise ValueError("a JWKS document has a 'keys' list")
    for jwk in keys:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        try:
            out[jwk["kid"]] = jwk_to_pem(jwk)
        except ValueError as exc:
            log.warning("edge.jwk_skipped", kid=jwk["kid"], error=str(exc))
    return out


def merge(by_region: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """Every region's kid -> PEM in one mapping (what :class:`EdgeSpec.token_keys` takes).

    A ``kid`` published with two different keys is dropped: neither can be pinned.
    """
    out: dict[str, str] = {}
    clash: set[str] = set()
    for keys in by_region.values():
        for kid, pem in keys.items():
            if kid in out and out[kid] != pem:
                clash.add(kid)
            out[kid] = pem
    for kid in clash:
        log.warning("edge.kid_clash", kid=kid)
        del out[kid]
    return out


async def fetch_jwks(
    client: httpx.AsyncClient, url: str, answer_within: float = 3.0, region: str | None = None
) -> dict[str, str]:
    """kid -> PEM published at ``url``; raises httpx.HTTPError or ValueError.

    With ``region``, the request names it as selector (so any edge routes it
    there) and an answer served by another region (a failover) is refused:
    it must never replace ``region``'s own keys.
    """
    headers = {SELECTOR_HEADER: region} if region else {}
    response = await client.get(url, timeout=answer_within, headers=headers)
    response.raise_for_status()
    served = response.headers.get(SELECTOR_HEADER)
    if region and served and served != region:
        raise ValueError(f"JWKS of {region} answered by {served} (failed over)")
    return jwks_to_pems(response.json())


async def fetch_all(
    urls: Mapping[str, str],
    previous: Mapping[str, Mapping[str, str]] | None = None,
    *,
    answer_within: float = 3.0,
    client: httpx.AsyncClient | None = None,
) -> dict[str, dict[str, str]]:
    """Region -> its keys, fetched concurrently; a region that fails keeps ``previous``.

    ``urls`` may all point at edges (``http://EDGE/.well-known/jwks.json``):
    each request carries its region as selector.
    """
    previous = previous or {}
    own = client is None
    http = client or httpx.AsyncClient(timeout=answer_within)
    try:
        regions = list(urls)
        answers = await asyncio.gather(
            *(fetch_jwks(http, urls[r], answer_within, r) for r in regions), return_exceptions=True
        )
    finally:
        if own:
            await http.aclose()
    out: dict[str, dict[str, str]] = {}
    for region, answer in zip(regions, answers, strict=True):
        if isinstance(answer, dict):
            out[region] = answer
            continue
        if isinstance(answer, httpx.HTTPError | ValueError):
            log.warning("edge.jwks_unreachable", region=region, url=urls[region], error=str(answer))
            if region in previous:
                out[region] = dict(previous[region])
            continue
        raise answer
    return out


class KeyedEdge(Protocol):
    """What :class:`KeyRefresher` drives: an :class:`skylift.edge.runner.Edge`."""

    @property
    def spec(self) -> EdgeSpec: ...

    async def apply(self, spec: EdgeSpec) -> None: ...


class KeyRefresher:
    """Keep an edge's pinned keys equal to every region's JWKS (rotation = a hitless reload).

    ``urls`` maps each region to where its JWKS is read (its platform, or any
    edge: the request names the region as selector). The edge is re-applied
    only when the merged kid -> PEM mapping changed.
    """

    def __init__(
        self,
        edge: KeyedEdge,
        urls: Mapping[str, str],
        *,
        interval: float = 30.0,
        answer_within: float = 3.0,
    ) -> None:
        self.edge = edge
        self.urls = dict(urls)
        self.interval = interval
        self.answer_within = answer_within
        self.by_region: dict[str, dict[str, str]] = {}

    async def refresh_once(self, client: httpx.AsyncClient | None = None) -> bool:
        """Fetch, merge, apply if changed; True when the edge got new keys."""
        self.by_region = await fetch_all(
            self.urls, self.by_region, answer_within=self.answer_within, client=client
        )
        keys = merge(self.by_region)
        if not keys or keys == dict(self.edge.spec.token_keys):
            return False  # nothing fetched yet must not unpin the configured keys
        await self.edge.apply(replace(self.edge.spec, token_keys=keys))
        log.info("edge.keys_updated", kids=sorted(keys))
        return True

    async def run(self) -> None:
        """Refresh forever (cancel to stop); a failed round is logged and retried."""
        async with httpx.AsyncClient(timeout=self.answer_within, trust_env=False) as client:
            while True:
                try:
                    await self.refresh_once(client)
                except HAProxyError as exc:
                    log.warning("edge.keys_apply_failed", error=str(exc))
                await asyncio.sleep(self.interval)
