"""Login attempts per account and per client, counted in Redis (shared by all replicas).

Fixed windows: one ``INCR`` per key per attempt, the key expiring with its
window. Account keys use a hash of the e-mail, so Redis holds no addresses.
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from skylift.platform.errors import RateLimited


class LoginLimiter:
    def __init__(self, redis: Redis, per_account: int, per_client: int, window: int) -> None:
        self._redis = redis
        self._limits = {"acct": per_account, "client": per_client}
        self._window = window

    async def hit(self, email: str, client: str, now: float) -> None:
        """Count one attempt; :class:`RateLimited` once either limit is passed."""
        slot = int(now // self._window)
        retry_after = max(1, self._window - int(now % self._window))
        names = {
            "acct": hashlib.sha256(email.encode()).hexdigest()[:32],
            "client": hashlib.sha256(client.encode()).hexdigest()[:32],
        }
        async with self._redis.pipeline(transaction=False) as pipe:
            for kind, name in names.items():
                key = f"rl:login:{kind}:{name}:{slot}"
                pipe.incr(key)
                pipe.expire(key, self._window, nx=True)
            counts = await pipe.execute()
        for (kind, limit), count in zip(self._limits.items(), counts[::2], strict=True):
            if int(count) > limit:
                what = "this account" if kind == "acct" else "this client"
                raise RateLimited(f"too many login attempts for {what}", retry_after)
