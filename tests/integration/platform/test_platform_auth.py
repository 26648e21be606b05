"""Sign-up, login, refresh, logout and /me on real PostgreSQL + Redis; token attacks fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from skylift.platform.keys import rotate


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    head, body, sig = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(head))),
        json.loads(base64.urlsafe_b64decode(pad(body))),
        sig,
    )


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


async def _me(running: Any, token: str) -> int:
    r = await running.client.get("/me", headers={"Authorization": f"Bearer {token}"})
    return int(r.status_code)


async def test_signup_login_me_refresh_logout(running: Any) -> None:
    pair = await running.signup_login()
    r = await running.client.get("/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert r.status_code == 200
    assert r.json()["email"] == "ada@example.com"
    assert r.json()["home_region"] == "eu"
    assert r.headers["x-replica"] == "test"
    header, claims, _ = _segments(pair["access_token"])
    assert header["alg"] == "ES256" and header["kid"]
    assert {"exp", "iat", "jti", "sub", "home_region"} <= claims.keys()
    assert claims["exp"] - claims["iat"] == running.settings.access_ttl

    r = await running.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 200
    new = r.json()
    assert new["refresh_token"] != pair["refresh_token"]
    assert await _me(running, new["access_token"]) == 200

    r = await running.client.post("/auth/logout", json={"refresh_token": new["refresh_token"]})
    assert r.status_code == 204
    r = await running.client.post("/auth/refresh", json={"refresh_token": new["refresh_token"]})
    assert r.status_code == 401


async def test_wrong_password_duplicate_signup_and_bad_input(running: Any) -> None:
    await running.signup_login()
    r = await running.client.post(
        "/auth/login", json={"email": "ada@example.com", "password": "wrong password"}
    )
    assert r.status_code == 401
    r = await running.client.post(
        "/auth/login", json={"email": "nobody@example.com", "password": "correct horse"}
    )
    assert r.status_code == 401
    r = await running.client.post(
        "/auth/signup", json={"email": "ADA@example.com", "password": "another one"}
    )
    assert r.status_code == 409
    r = await running.client.post("/auth/signup", json={"email": "x@y.z", "password": "short"})
    assert r.status_code == 400
    r = await running.client.post("/auth/signup", content=b"not json")
    assert r.status_code == 400


async def test_alg_none_is_refused(running: Any) -> None:
    pair = await running.signup_login()
    header, claims, _ = _segments(pair["access_token"])
    forged = _unsigned({"alg": "none", "typ": "JWT", "kid": header["kid"]}, claims) + "."
    assert await _me(running, forged) == 401


async def test_hs256_signed_with_the_public_key_is_refused(running: Any) -> None:
    pair = await running.signup_login()
    header, claims, _ = _segments(pair["access_token"])
    jwk = (await running.client.get("/.well-known/jwks.json")).json()["keys"][0]
    public = jwt.PyJWK(jwk).key
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (pem, pem.strip()):
        signing_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": header["kid"]}, claims)
        sig = _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
        assert await _me(running, f"{signing_input}.{sig}") == 401


async def test_wrong_key_expired_and_tampered_tokens_are_refused(running: Any) -> None:
    pair = await running.signup_login()
    header, claims, sig = _segments(pair["access_token"])
    assert await _me(running, pair["access_token"]) == 200

    other = ec.generate_private_key(ec.SECP256R1())
    wrong_key = jwt.encode(claims, other, algorithm="ES256", headers={"kid": header["kid"]})
    assert await _me(running, wrong_key) == 401

    signer = running.platform.keyring.signing.private_key
    expired = {**claims, "iat": int(time.time()) - 600, "exp": int(time.time()) - 300}
    token = jwt.encode(expired, signer, algorithm="ES256", headers={"kid": header["kid"]})
    assert await _me(running, token) == 401

    valid_again = {**claims, "exp": int(time.time()) + 60}
    token = jwt.encode(valid_again, signer, algorithm="ES256", headers={"kid": header["kid"]})
    assert await _me(running, token) == 200  # same key and claims, fresh exp: the control

    for changed in ({"sub": "00000000-0000-0000-0000-000000000000"}, {"home_region": "us"}):
        tampered = _unsigned(header, {**claims, **changed}) + "." + sig
        assert await _me(running, tampered) == 401
    unknown_kid = jwt.encode(claims, signer, algorithm="ES256", headers={"kid": "nope"})
    assert await _me(running, unknown_kid) == 401
    missing_claim = {k: v for k, v in claims.items() if k != "home_region"}
    token = jwt.encode(missing_claim, signer, algorithm="ES256", headers={"kid": header["kid"]})
    assert await _me(running, token) == 401


async def test_refresh_token_reuse_revokes_the_family(running: Any) -> None:
    pair = await running.signup_login()
    other_login = await running.client.post(
        "/auth/login", json={"email": "ada@example.com", "password": "correct horse"}
    )
    r1 = await running.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r1.status_code == 200
    successor = r1.json()["refresh_token"]

    replay = await running.client.post(
        "/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert replay.status_code == 401
    assert "revoked" in replay.json()["error"]
    # the legitimate successor died with its family...
    r = await running.client.post("/auth/refresh", json={"refresh_token": successor})
    assert r.status_code == 401
    # ...but another login (another family) is untouched
    r = await running.client.post(
        "/auth/refresh", json={"refresh_token": other_login.json()["refresh_token"]}
    )
    assert r.status_code == 200
    r = await running.client.post("/auth/refresh", json={"refresh_token": "made-up"})
    assert r.status_code == 401


async def test_login_is_rate_limited_per_account(running: Any) -> None:
    await running.signup_login()  # one attempt used
    creds = {"email": "ada@example.com", "password": "wrong password"}
    codes = [(await running.client.post("/auth/login", json=creds)).status_code for _ in range(5)]
    assert codes == [401, 401, 401, 401, 429]
    r = await running.client.post("/auth/login", json=creds)
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= running.settings.login_window
    other = await running.client.post(
        "/auth/signup", json={"email": "bob@example.com", "password": "correct horse"}
    )
    assert other.status_code == 201
    r = await running.client.post(
        "/auth/login", json={"email": "bob@example.com", "password": "correct horse"}
    )
    assert r.status_code == 200  # the limit is per account


async def test_jwks_keeps_the_previous_key_after_rotation(running: Any) -> None:
    pair = await running.signup_login()
    before = (await running.client.get("/.well-known/jwks.json")).json()["keys"]
    assert len(before) == 1 and before[0]["alg"] == "ES256" and "d" not in before[0]
    new_key = rotate(running.settings.key_dir)
    running.platform.keyring._checked = 0.0  # skip the 1 s re-read interval
    after = (await running.client.get("/.well-known/jwks.json")).json()["keys"]
    assert [k["kid"] for k in after] == [new_key.kid, before[0]["kid"]]
    assert await _me(running, pair["access_token"]) == 200  # signed with the old key
    fresh = (
        await running.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    ).json()
    assert _segments(fresh["access_token"])[0]["kid"] == new_key.kid
    assert await _me(running, fresh["access_token"]) == 200
    key_files = list(running.settings.key_dir.glob("*.pem"))
    assert key_files and all(p.stat().st_mode & 0o777 == 0o600 for p in key_files)


async def test_profile_cache_is_refreshed_on_update(running: Any) -> None:
    pair = await running.signup_login()
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    assert (await running.client.get("/me", headers=auth)).json()["display_name"] is None
    r = await running.client.patch("/me", headers=auth, json={"display_name": "Ada"})
    assert r.status_code == 200
    assert (await running.client.get("/me", headers=auth)).json()["display_name"] == "Ada"
    cached = await running.platform.redis.get(f"user:{r.json()['id']}")
    assert json.loads(cached)["display_name"] == "Ada"


async def test_metrics_count_requests_by_route_and_are_not_served_through_a_proxy(
    running: Any,
) -> None:
    await running.signup_login()
    text = (await running.client.get("/metrics")).text
    assert (
        'skylift_platform_request_duration_seconds_count{code="2xx",method="POST",'
        'route="/auth/login"} 1.0' in text
    )
    assert 'skylift_platform_auth_events_total{event="login"} 1.0' in text
    proxied = await running.client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 404
    ready = await running.client.get("/readyz")
    assert ready.json() == {"ready": True, "checks": {"redis": True, "postgresql": True}}


async def test_concurrent_refreshes_with_one_token_cannot_both_win(running: Any) -> None:
    import asyncio

    pair = await running.signup_login()
    body = {"refresh_token": pair["refresh_token"]}
    responses = await asyncio.gather(
        *(running.client.post("/auth/refresh", json=body) for _ in range(4))
    )
    assert sorted(r.status_code for r in responses) == [200, 401, 401, 401]


async def test_login_is_rate_limited_per_client_address(running: Any) -> None:
    running.platform.limiter._limits["client"] = 3
    creds = {"email": "nobody@example.com", "password": "wrong password"}

    async def login_from(address: str, email: str) -> int:
        headers = {"X-Forwarded-For": f"203.0.113.77, {address}"}  # the proxy appends the peer
        r = await running.client.post(
            "/auth/login", json={**creds, "email": email}, headers=headers
        )
        return int(r.status_code)

    codes = [await login_from("198.51.100.1", f"n{i}@example.com") for i in range(4)]
    assert codes == [401, 401, 401, 429]  # different accounts, one client
    assert await login_from("198.51.100.2", "n9@example.com") == 401  # another client


async def test_a_replayed_refresh_with_its_idempotency_key_gets_the_same_answer(
    running: Any,
) -> None:
    """What a load balancer's retry after a replica died mid-request looks like."""
    pair = await running.signup_login()
    body = {"refresh_token": pair["refresh_token"]}
    key = {"Idempotency-Key": "refresh-7f3a9c21"}
    first = await running.client.post("/auth/refresh", json=body, headers=key)
    replay = await running.client.post("/auth/refresh", json=body, headers=key)
    assert first.status_code == replay.status_code == 200
    assert replay.json() == first.json()
    sealed = [k async for k in running.platform.redis.scan_iter("rti:*")]
    assert len(sealed) == 1
    assert first.json()["refresh_token"].encode() not in await running.platform.redis.get(sealed[0])
    # the family lives on: the successor works once
    nxt = {"refresh_token": first.json()["refresh_token"]}
    assert (await running.client.post("/auth/refresh", json=nxt)).status_code == 200
    # the same old token with another key is plain reuse: the family is revoked
    other = {"Idempotency-Key": "refresh-other-key"}
    reuse = await running.client.post("/auth/refresh", json=body, headers=other)
    assert reuse.status_code == 401 and "revoked" in reuse.json()["error"]
