"""Opaque refresh tokens in Redis: rotated on every use; reuse revokes the whole family.

Redis holds only a token's SHA-256, never the token. A login starts a
*family*; each refresh marks the presented token used and issues its
successor in the same family. Presenting a used token means it was copied
(the thief or the user is replaying an old one): every token of the family is
deleted, so both must log in again. Both steps are one Lua script, so two
concurrent refreshes with one token cannot both succeed.

A load balancer that replays a request after a replica died mid-way would
look like reuse. A client that sends an ``Idempotency-Key`` is safe from
that: the answer to its refresh is kept for a minute, sealed (AES-GCM) under
a key derived from the old token and the idempotency key, and a replay of the
same request gets the same answer instead of a revocation.

Keys: ``rt:<hash>`` (hash: user, family, state), ``rtf:<family>`` (set of
hashes), ``rti:<hash>`` (sealed answers); all expire. The script touches keys
it derives itself, so it needs a single Redis (not Redis Cluster).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.asyncio import Redis

REPLAY_TTL = 60  # seconds a sealed answer can be replayed

_ROTATE = """
local old = KEYS[1]
local rec = redis.call('HMGET', old, 'user', 'family', 'state')
if not rec[1] then return {'invalid', '', '', ''} end
local user, family, state = rec[1], rec[2], rec[3]
local fam = 'rtf:' .. family
if state ~= 'live' then
  if KEYS[2] then
    local sealed = redis.call('GET', KEYS[2])
    if sealed then return {'replay', user, family, sealed} end
  end
  for _, h in ipairs(redis.call('SMEMBERS', fam)) do redis.call('DEL', 'rt:' .. h) end
  redis.call('DEL', fam)
  return {'reuse', user, family, ''}
end
if ARGV[1] == '' then
  for _, h in ipairs(redis.call('SMEMBERS', fam)) do redis.call('DEL', 'rt:' .. h) end
  redis.call('DEL', fam)
  return {'revoked', user, family, ''}
end
redis.call('HSET', old, 'state', 'used')
local new = 'rt:' .. ARGV[1]
redis.call('HSET', new, 'user', user, 'family', family, 'state', 'live')
redis.call('EXPIRE', new, ARGV[2])
redis.call('SADD', fam, ARGV[1])
redis.call('EXPIRE', fam, ARGV[2])
if KEYS[2] then redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4]) end
return {'ok', user, family, ''}
"""

Outcome = Literal["ok", "invalid", "reuse", "revoked", "replay"]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _aead(token: str, idempotency_key: str) -> AESGCM:
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=idempotency_key.encode(),
        info=b"skylift-platform refresh replay",
    ).derive(token.encode())
    return AESGCM(key)


def seal(token: str, idempotency_key: str, answer: bytes) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + _aead(token, idempotency_key).encrypt(nonce, answer, None)


def unseal(token: str, idempotency_key: str, sealed: bytes) -> bytes | None:
    try:
        return _aead(token, idempotency_key).decrypt(sealed[:12], sealed[12:], None)
    except (InvalidTag, ValueError):
        return None


@dataclass(frozen=True)
class Rotation:
    outcome: Outcome
    user_id: str
    family: str
    replayed: bytes | None = None  # the sealed-then-opened answer when outcome == "replay"


class RefreshTokens:
    """Issue, rotate and revoke refresh-token families."""

    def __init__(self, redis: Redis, ttl: int) -> None:
        self._redis = redis
        self._ttl = ttl
        self._rotate = redis.register_script(_ROTATE)

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(32)

    async def issue(self, user_id: str) -> str:
        token, family = self.new_token(), uuid.uuid4().hex
        digest = token_hash(token)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"rt:{digest}", mapping={"user": user_id, "family": family, "state": "live"})
            pipe.expire(f"rt:{digest}", self._ttl)
            pipe.sadd(f"rtf:{family}", digest)
            pipe.expire(f"rtf:{family}", self._ttl)
            await pipe.execute()
        return token

    async def owner(self, token: str) -> str | None:
        """The user a token belongs to (used or not), without changing anything."""
        user = await self._redis.hget(f"rt:{token_hash(token)}", "user")
        return user.decode() if isinstance(user, bytes) else user

    async def rotate(
        self,
        token: str,
        successor: str,
        idempotency_key: str | None = None,
        answer: bytes = b"",
    ) -> Rotation:
        """Use ``token`` once, making ``successor`` live (reuse revokes the family).

        With an ``idempotency_key``, ``answer`` is kept sealed so that a replay of this
        very request gets it back (outcome ``replay``) instead of revoking the family.
        """
        keys = [f"rt:{token_hash(token)}"]
        if idempotency_key:
            keys.append(f"rti:{token_hash(token + ':' + idempotency_key)}")
            answer = seal(token, idempotency_key, answer)
        rotation = await self._run(keys, [token_hash(successor), self._ttl, answer, REPLAY_TTL])
        if rotation.outcome == "replay" and idempotency_key and rotation.replayed:
            opened = unseal(token, idempotency_key, rotation.replayed)
            return Rotation("replay", rotation.user_id, rotation.family, opened)
        return rotation

    async def revoke(self, token: str) -> Rotation:
        """Logout: delete the token's whole family (a used token also counts as reuse)."""
        return await self._run([f"rt:{token_hash(token)}"], ["", self._ttl, b"", REPLAY_TTL])

    async def _run(self, keys: list[str], args: list[str | int | bytes]) -> Rotation:
        raw = await self._rotate(keys=keys, args=args)
        outcome, user, family = (v.decode() if isinstance(v, bytes) else str(v) for v in raw[:3])
        sealed = raw[3] if isinstance(raw[3], bytes) and raw[3] else None
        return Rotation(outcome, user, family, sealed)  # type: ignore[arg-type]
