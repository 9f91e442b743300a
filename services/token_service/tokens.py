"""The one ION access token the whole bridge shares.

Fetched with authlib (password grant with the service account keys for Backend Service apps, client
credentials otherwise), refreshed ahead of expiry in the background while callers keep the current token,
one fetch at a time, invalidated once for everyone on a reported 401, revoked on shutdown. With a shared store
(`shared_tokens.SharedTokens`, Redis) every token-service replica uses the token one of them fetched, and one refresh
runs for the whole tenant; while the store cannot be reached each replica fetches its own.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import authlib.deprecate  # noqa: F401 - imported first on purpose, see the filter below
import httpx
from prometheus_client import Counter, Gauge

from shared.m3.ionapi import IonApiCredentials
from shared.m3.lease import token_fingerprint

# authlib >= 1.8 prefers the httpx2 fork; we stay on httpx (FastAPI's and faststream's) until they move.
# authlib.deprecate installs an "always" filter for its warnings when imported, so ours must come after it.
warnings.filterwarnings("ignore", message="The httpx module is deprecated")
from authlib.integrations.httpx_client import AsyncOAuth2Client  # noqa: E402

if TYPE_CHECKING:
    from services.token_service.shared_tokens import SharedTokens

log = logging.getLogger(__name__)

token_fetches = Counter(
    "m3bridge_token_refresh_total", "ION access token fetches by grant and outcome.", ["grant", "outcome"]
)
token_expiry = Gauge("m3bridge_token_expiry_timestamp_seconds", "When the current ION access token expires.")


class TokenUnavailableError(Exception):
    """No valid token, and fetching one failed."""


@dataclass(frozen=True)
class CachedToken:
    access_token: str
    expires_at: float  # time.time()
    refresh_at: float  # when to start fetching the next one

    @property
    def fingerprint(self) -> str:
        return token_fingerprint(self.access_token)


class TokenKeeper:
    def __init__(
        self,
        credentials: IonApiCredentials,
        *,
        refresh_ahead_s: float = 300.0,
        max_ttl_s: float = 7200.0,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        store: SharedTokens | None = None,
        owner: str = "token-service",
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._credentials = credentials
        self._store = store
        self._owner = owner
        self._timeout_s = timeout_s
        self._dropped: str | None = None
        self._refresh_ahead_s = refresh_ahead_s
        self._max_ttl_s = max_ttl_s
        self._oauth = AsyncOAuth2Client(
            client_id=credentials.client_id,
            client_secret=credentials.client_secret.get_secret_value(),
            token_endpoint=credentials.token_url,
            token_endpoint_auth_method="client_secret_basic",  # noqa: S106 - a method name
            timeout=timeout_s,
            transport=transport,
            verify=verify,
        )
        self._current: CachedToken | None = None
        self._refresh: asyncio.Task[CachedToken] | None = None
        self.last_error: str | None = None
        self.failing_since: float | None = None

    @property
    def grant(self) -> str:
        return self._credentials.grant_type

    async def token(self) -> CachedToken:
        """A valid token: the current one, or a fresh one when there is none or it expired."""
        now = time.time()
        current = self._current
        if current is not None and now < current.refresh_at:
            return current
        refresh = self._start_refresh()
        # Still valid long enough to be used: hand it out while the refresh runs in the background. The margin
        # keeps a token from expiring in flight; it is a quarter of the refresh window, at most 5 s.
        margin = min(5.0, (current.expires_at - current.refresh_at) / 4) if current is not None else 0.0
        if current is not None and now < current.expires_at - margin:
            return current
        return await asyncio.shield(refresh)

    async def invalidate(self, fingerprint: str | None) -> bool:
        """A caller got a 401 with the token of this fingerprint. If it is the current one, drop it and fetch
        another (once, however many callers report it); returns whether a refresh was started."""
        current = self._current
        if current is None or (fingerprint is not None and fingerprint != current.fingerprint):
            return False  # an older token: the current one is already newer
        self._current = None
        self._dropped = current.fingerprint
        if self._store is not None:
            try:
                await self._store.drop(current.fingerprint)
            except Exception as exc:  # the store is down: this replica fetches its own
                log.warning("could not drop the shared ION token: %s", type(exc).__name__)
        self._start_refresh()
        return True

    async def revoke(self) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        try:
            await self._oauth.revoke_token(
                self._credentials.revoke_url,
                token=current.access_token,
                token_type_hint="access_token",  # noqa: S106
            )
            log.info("revoked the ION access token %s…", current.fingerprint[:12])
        except Exception as exc:  # shutting down: a token we could not revoke simply expires
            log.warning("could not revoke the ION access token: %s", type(exc).__name__)

    async def close(self) -> None:
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
        await self._oauth.aclose()

    def holds_valid_token(self) -> bool:
        return self._current is not None and time.time() < self._current.expires_at

    def status(self) -> dict[str, object]:
        current = self._current
        return {
            "grant": self.grant,
            "token": "none" if current is None else f"valid for {max(0, current.expires_at - time.time()):.0f}s",
            "refresh": "ok" if self.last_error is None else f"failing: {self.last_error}",
        }

    def _start_refresh(self) -> asyncio.Task[CachedToken]:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._obtain(), name="ion-token-refresh")
            # A background refresh nobody awaits may fail; its error is in `last_error` and the logs already.
            self._refresh.add_done_callback(lambda task: task.cancelled() or task.exception())
        return self._refresh

    async def _obtain(self) -> CachedToken:
        if self._store is None:
            return await self._fetch()
        try:
            return await self._obtain_shared(self._store)
        except TokenUnavailableError:
            raise
        except Exception as exc:  # Redis down: better a token of our own than none
            log.warning("shared ION token store unreachable (%s); fetching a token for this replica",
                        type(exc).__name__)  # fmt: skip
            return await self._fetch()

    async def _obtain_shared(self, store: SharedTokens) -> CachedToken:
        """The shared token when it is fresh; else fetch one if no other replica is fetching, else wait for theirs
        (using the current shared one meanwhile while it is still valid)."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            shared = await store.read()
            now = time.time()
            usable = shared is not None and shared.fingerprint != self._dropped
            if shared is not None and usable and now < shared.refresh_at:
                return self._adopt(shared)
            if await store.claim_refresh(self._owner):
                try:
                    fresh = await self._fetch()
                    await store.write(fresh, now=time.time())
                    return fresh
                finally:
                    await store.release_refresh(self._owner)
            if shared is not None and usable and now < shared.expires_at - 5:
                return self._adopt(shared)  # another replica refreshes it; this one is good meanwhile
            if time.monotonic() > deadline:
                raise TokenUnavailableError("another token-service replica's token refresh did not finish")
            await asyncio.sleep(0.1)

    def _adopt(self, token: CachedToken) -> CachedToken:
        if self._current is None or self._current.fingerprint != token.fingerprint:
            token_expiry.set(token.expires_at)
            log.info("using the shared ION access token %s… valid %.0fs", token.fingerprint[:12],
                     token.expires_at - time.time())  # fmt: skip
        self._current = token
        self.last_error = None
        self.failing_since = None
        return token

    async def _fetch(self) -> CachedToken:
        credentials = self._credentials
        try:
            if self.grant == "password":
                token = await self._oauth.fetch_token(
                    credentials.token_url,
                    grant_type="password",
                    username=credentials.service_account_access_key,
                    password=credentials.service_account_secret_key.get_secret_value(),
                )
            else:
                token = await self._oauth.fetch_token(credentials.token_url, grant_type="client_credentials")
        except Exception as exc:
            token_fetches.labels(self.grant, "error").inc()
            # The exception text may quote the request; only its class and the OAuth error code are kept.
            self.last_error = f"{type(exc).__name__} {getattr(exc, 'error', '') or ''}".strip()
            self.failing_since = self.failing_since or time.time()
            log.error("ION token fetch (%s grant) failed: %s", self.grant, self.last_error)
            raise TokenUnavailableError(self.last_error) from None
        access_token = token.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            token_fetches.labels(self.grant, "error").inc()
            self.last_error = "token response without access_token"
            raise TokenUnavailableError(self.last_error)
        # No expires_in would mean "never refreshed" to authlib; cap the lifetime ourselves.
        lifetime = min(float(token.get("expires_in") or self._max_ttl_s), self._max_ttl_s)
        now = time.time()
        # Short-lived tokens (tests, strict tenants) refresh in their last fifth rather than constantly.
        ahead = min(self._refresh_ahead_s, lifetime / 5)
        fresh = CachedToken(access_token, now + lifetime, now + lifetime - ahead)
        self._current = fresh
        self.last_error = None
        self.failing_since = None
        token_fetches.labels(self.grant, "ok").inc()
        token_expiry.set(fresh.expires_at)
        log.info("new ION access token %s… valid %.0fs", fresh.fingerprint[:12], fresh.expires_at - time.time())
        return fresh
