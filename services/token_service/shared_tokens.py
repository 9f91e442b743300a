"""The tenant's ION access token in Redis, so token-service replicas use one token and one refresh runs at a time.

Service-account tokens are limited per tenant (and every fetch is a request to the IdP), so replicas share the one
token instead of each holding its own. The token is kept encrypted (Fernet, with a key derived from the .ionapi
client secret: whoever reads Redis without the .ionapi learns nothing usable) under a TTL that ends when the token
expires, next to its fingerprint; a refresh is claimed with SET NX (expiring, so a replica that dies while fetching
does not block the others) and released by its owner only.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken
from redis.asyncio import Redis

from services.token_service.tokens import CachedToken

# KEYS: token. ARGV: fingerprint. Deletes the token only while it is the one with this fingerprint.
_DROP = """
if redis.call('HGET', KEYS[1], 'fingerprint') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: lock. ARGV: owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SharedTokens:
    def __init__(self, redis: Redis, *, key_prefix: str, client_secret: str, refresh_lock_s: float = 30.0) -> None:
        self.redis = redis
        self._key = f"{key_prefix}:token"
        self._lock = f"{key_prefix}:token:refresh"
        self._lock_ms = int(refresh_lock_s * 1000)
        digest = hashlib.sha256(b"m3bridge shared ION token\0" + client_secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        self._drop = redis.register_script(_DROP)
        self._release = redis.register_script(_RELEASE)

    async def read(self) -> CachedToken | None:
        """The shared token, or None when there is none (or it cannot be read with this tenant's secret)."""
        blob = await self.redis.hget(self._key, "token")
        if blob is None:
            return None
        try:
            data = json.loads(self._fernet.decrypt(blob))
            return CachedToken(str(data["access_token"]), float(data["expires_at"]), float(data["refresh_at"]))
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None  # another tenant's or a damaged entry: fetch a new one, which overwrites it

    async def write(self, token: CachedToken, *, now: float) -> None:
        payload = {"access_token": token.access_token, "expires_at": token.expires_at, "refresh_at": token.refresh_at}
        blob = self._fernet.encrypt(json.dumps(payload).encode())
        ttl_ms = max(1000, int((token.expires_at - now) * 1000))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key, mapping={"token": blob, "fingerprint": token.fingerprint})
            pipe.pexpire(self._key, ttl_ms)
            await pipe.execute()

    async def drop(self, fingerprint: str) -> bool:
        """A caller got 401 with this token: delete it if it still is the shared one."""
        return bool(await self._drop(keys=[self._key], args=[fingerprint]))

    async def claim_refresh(self, owner: str) -> bool:
        return bool(await self.redis.set(self._lock, owner, nx=True, px=self._lock_ms))

    async def release_refresh(self, owner: str) -> None:
        await self._release(keys=[self._lock], args=[owner])
