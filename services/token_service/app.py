"""token-service wiring: the .ionapi credentials, the shared token, the central budget, the lease API."""

# No `from __future__ import annotations` here: FastAPI must see the route signatures' local dependency types.

import contextlib
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from pydantic import AliasChoices, Field, SecretStr, field_validator

from services.token_service.budget import Budget, BudgetPolicy, BudgetTimeoutError, RateBudget, budget_shared
from services.token_service.leases import LeaseDesk, bounded
from services.token_service.tokens import TokenKeeper, TokenUnavailableError

if TYPE_CHECKING:
    # Imported only when M3B_BUDGET_REDIS_URL is set: one token-service without Redis does not carry the client.
    from redis.asyncio import Redis

    from services.token_service.shared_tokens import SharedTokens
from shared.m3.ionapi import IonApiCredentials, IonApiFileError
from shared.m3.lease import Lease, LeaseRequest, Priority, Report
from shared.platform.auth import CallerGuard
from shared.platform.logs import secret_masker
from shared.platform.runtime import ServiceRuntime, outgoing_tls
from shared.platform.settings import BridgeSettings

log = logging.getLogger(__name__)


class TokenServiceSettings(BridgeSettings):
    service_name: str = "token-service"
    ion_api_file: Path = Field(
        Path("/run/secrets/ionapi"),
        validation_alias=AliasChoices("M3B_ION_API_FILE", "ION_API_FILE"),
        description="The tenant's .ionapi file (also read from ION_API_FILE). Only token-service reads it.",
    )
    service_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Callers and their keys, JSON: {"order-writer": "…", …}. Use a secret file.',
    )
    caller_priorities: dict[str, Priority] = Field(
        default_factory=dict,
        description="The highest lease priority per caller, JSON, over the defaults "
        '{"inventory-query": "interactive", "order-writer": "transactional", "catalog-sync": "bulk"} (any other '
        "caller: transactional). A caller asking for more is granted at its own, so a catalog load cannot take the "
        "permits kept for reps.",
    )
    throttle_period_ms: int = Field(60_000, ge=1, description="The Gateway throttling policy's time period.")
    throttle_max_requests: int = Field(
        3000, ge=1, description="The policy's spike-arrest maximum requests per period (the tenant's limit)."
    )
    throttle_mode: Literal["windowed", "smoothed"] = Field(
        "windowed",
        description="`smoothed` when the policy spaces requests evenly (spike arrest: one per period/N): the budget "
        "then never bursts; use a utilisation of about 0.85 for timing margin.",
    )
    throttle_delay_after_count: int | None = Field(
        None,
        ge=1,
        description="The policy's rate smoothing `delayAfterCount`, when it has one: past that many requests in a "
        "period the Gateway delays each further one, so the budget paces below it instead of at the maximum.",
    )
    budget_utilisation: float = Field(0.96, gt=0, le=1, description="Share of the policy limit the budget paces at.")
    interactive_reserve: int = Field(1, ge=0, description="Permits kept back for interactive callers.")
    refresh_ahead_s: float = Field(300.0, ge=0, description="Fetch the next token this long before expiry.")
    budget_redis_url: str = Field(
        "",
        description="Redis that token-service replicas share the tenant's rate budget and ION token through, e.g. "
        "`redis://redis:6379/0` (`rediss://` for TLS); the password goes into M3B_BUDGET_REDIS_PASSWORD, never into "
        "the URL. Empty: the budget and token live in this process, right for one replica (`make run`). Required "
        "for more than one replica: each would otherwise spend the tenant's whole limit.",
    )
    budget_redis_password: SecretStr = Field(SecretStr(""), description="Password of M3B_BUDGET_REDIS_URL's Redis.")
    budget_redis_prefix: str = Field(
        "m3bridge",
        pattern=r"^[A-Za-z0-9._:-]{1,64}$",
        description="First part of the Redis keys (`<prefix>:{<tenant>}:budget:…`): bridges of different "
        "environments sharing one Redis keep apart by it.",
    )
    max_throttle_pause_s: float = Field(
        60.0, gt=0, le=3600, description="Longest pause a reported 429's Retry-After imposes on every caller; a longer "
        "one is cut to this (a 429 after the pause pauses again)."
    )  # fmt: skip

    @field_validator("budget_redis_url")
    @classmethod
    def _no_password_in_url(cls, url: str) -> str:
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        if "@" in url.split("//", 1)[-1].split("/", 1)[0]:
            raise ValueError("must not carry credentials: put the password into M3B_BUDGET_REDIS_PASSWORD")
        return url


def create_runtime(settings: TokenServiceSettings | None = None) -> ServiceRuntime:
    settings = settings or TokenServiceSettings()
    secret_masker.add(key.get_secret_value() for key in settings.service_keys.values())
    runtime = ServiceRuntime(
        settings,
        description="Shares one ION OAuth 2 token and the tenant's rate budget among the bridge's services.",
    )
    policy = BudgetPolicy(
        period_s=settings.throttle_period_ms / 1000,
        max_requests_per_period=settings.throttle_max_requests,
        utilisation=settings.budget_utilisation,
        interactive_reserve=settings.interactive_reserve,
        smoothed=settings.throttle_mode == "smoothed",
        delay_after_count=settings.throttle_delay_after_count,
        max_pause_s=settings.max_throttle_pause_s,
    )
    if policy.worst_case_per_period > policy.max_requests_per_period:
        log.warning(
            "the budget may send %.0f requests in one period, more than the policy's %d: lower "
            "M3B_BUDGET_UTILISATION or M3B_INTERACTIVE_RESERVE",
            policy.worst_case_per_period,
            policy.max_requests_per_period,
        )
    desk: dict[str, LeaseDesk] = {}
    redis: Redis | None = None
    if settings.budget_redis_url:
        from redis import asyncio as redis_asyncio

        password = settings.budget_redis_password.get_secret_value() or None
        redis = redis_asyncio.Redis.from_url(settings.budget_redis_url, password=password, socket_timeout=0.5,
                                             socket_connect_timeout=0.5)  # fmt: skip

    async def credentials_ready() -> str | None:
        # Ready while a valid token is held, even if refreshing it fails: callers keep working meanwhile,
        # and /healthz shows the failing refresh.
        if "desk" not in desk:
            return f"no usable .ionapi file at {settings.ion_api_file}"
        keeper = desk["desk"].keeper
        if keeper.holds_valid_token() or keeper.last_error is None:
            return None
        return f"no valid token and fetching one fails: {keeper.last_error}"

    runtime.health.add_check("ion_token", credentials_ready)

    @runtime.on_startup
    async def open_desk() -> None:
        try:
            credentials = IonApiCredentials.load(settings.ion_api_file)
        except IonApiFileError as exc:
            # Not ready until the file is fixed; said once here, not only in /readyz.
            log.error("M3B_ION_API_FILE %s cannot be used: %s; token-service grants no lease until it is fixed "
                      "(then restart it)", settings.ion_api_file, exc)  # fmt: skip
            runtime.health.set_detail("credentials", str(exc))
            return
        secret_masker.add(credentials.secrets())
        budget: Budget = RateBudget(policy)
        budget_shared.set(1)  # alone, with no Redis configured, its own budget is the whole tenant's
        store: SharedTokens | None = None
        if redis is not None:
            from services.token_service import shared_budget, shared_tokens

            prefix = f"{settings.budget_redis_prefix}:{{{credentials.tenant}}}"  # a tenant's keys in one Cluster slot
            replicas = functools.partial(runtime.heartbeats.live_instances, runtime.name)
            budget = shared_budget.SharedBudget(redis, policy, key_prefix=prefix, replicas=replicas)
            secret = credentials.client_secret.get_secret_value()
            store = shared_tokens.SharedTokens(redis, key_prefix=prefix, client_secret=secret)
        keeper = TokenKeeper(credentials, refresh_ahead_s=settings.refresh_ahead_s, store=store,
                             owner=settings.instance_id, verify=outgoing_tls(settings))  # fmt: skip
        desk["desk"] = LeaseDesk(budget, keeper, credentials.m3_base_url)
        runtime.health.set_detail("credentials", {"tenant": credentials.tenant, "grant": credentials.grant_type})
        runtime.health.set_detail("token", keeper.status)
        runtime.health.set_detail("budget", desk["desk"].status)
        # The first lease should not wait for the IdP; a failure is logged, shown in readiness, retried by leases.
        with contextlib.suppress(TokenUnavailableError):
            await keeper.token()

    @runtime.on_shutdown
    async def close_desk() -> None:
        if "desk" in desk:
            await desk["desk"].budget.close()
            # A shared token stays for the other replicas; a token of this process alone is revoked.
            if redis is None:
                await desk["desk"].keeper.revoke()
            await desk["desk"].keeper.close()
        if redis is not None:
            await redis.aclose()

    # The bridge's one key scheme, a key per calling service: checked before a body is read, the caller named.
    callers = CallerGuard({service: key.get_secret_value() for service, key in settings.service_keys.items()})
    caller_key = [callers.dependency()]

    CallerName = Annotated[str, callers.caller_dependency()]  # noqa: N806 - a type alias

    def open_desk_or_503() -> LeaseDesk:
        if "desk" not in desk:
            raise HTTPException(status_code=503, detail=f"no usable .ionapi file at {settings.ion_api_file}")
        return desk["desk"]

    @runtime.app.post("/v1/leases", response_model=None, tags=["leases"], summary="Lease the token and permits",
                      dependencies=caller_key)  # fmt: skip
    async def lease(request: LeaseRequest, service: CallerName) -> JSONResponse | dict[str, object]:
        try:
            granted: Lease = await open_desk_or_503().lease(bounded(request, service, settings.caller_priorities))
        except BudgetTimeoutError as exc:
            return JSONResponse({"error": "budget_exhausted", "detail": str(exc)}, 429, headers={"Retry-After": "1"})
        except TokenUnavailableError as exc:
            return JSONResponse({"error": "token_unavailable", "detail": str(exc)}, 503)
        return {**granted.model_dump(mode="json"), "access_token": granted.access_token.get_secret_value()}

    @runtime.app.post("/v1/reports", status_code=202, tags=["leases"], summary="Report a 429 or 401 from the Gateway",
                      dependencies=caller_key)  # fmt: skip
    async def report(body: Report, service: CallerName) -> dict[str, str]:
        return {"action": await open_desk_or_503().report(service, body)}

    @runtime.app.get("/v1/budget", tags=["leases"], summary="The budget's current pace and queues",
                     dependencies=caller_key)  # fmt: skip
    async def budget_status(_service: CallerName) -> dict[str, object]:
        return {**open_desk_or_503().status(), "token": open_desk_or_503().keeper.status()}

    runtime.health.set_detail("logic", "leases of the shared ION token under the central rate budget")
    return runtime
