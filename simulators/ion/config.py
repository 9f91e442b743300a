"""Configuration of the ION API Gateway simulator.

Mirrors the real Gateway facts in `shared/reference/m3-research.md` §4: `.ionapi` identities, a 2 h token lifetime,
and the throttling policy (`timePeriodInMilliseconds`, `rateSmoothing`, `spikeArrest`). `client_secret` and `sask`
are secrets: they are `SecretStr` so that a repr or a log line never shows them.
"""

from __future__ import annotations

import hashlib
import importlib
from typing import Any, Literal
from xml.etree.ElementTree import Element

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

#: The XML namespace of ION API Gateway policies.
ION_API_NS = "http://www.infor.com/ion/api"


def _derive(seed: int, label: str) -> str:
    """A deterministic, secret-looking value (the simulator's default credentials; not a real secret)."""
    return hashlib.sha256(f"m3bridge-sim:{seed}:{label}".encode()).hexdigest()[:40]


def _parse_xml(text: str) -> Element:
    """Parse trusted-but-external XML with defusedxml when it is installed.

    Without it, the standard library parser is used: Python 3.11's bundled expat (>= 2.4.1) guards against
    entity-expansion bombs and never fetches external entities.
    """
    try:
        defused = importlib.import_module("defusedxml.ElementTree")
    except ImportError:
        from xml.etree.ElementTree import fromstring

        return fromstring(text)  # noqa: S314
    root: Element = defused.fromstring(text)
    return root


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: Element, name: str) -> Element | None:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _int_child(element: Element, name: str) -> int:
    child = _child(element, name)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"throttling policy: <{name}> is required")
    return int(child.text.strip())


#: The spike-arrest model: a count per period (`windowed`, Infor's documented semantics) or Apigee-style smoothing.
ThrottleMode = Literal["windowed", "smoothed"]
#: What "the same period" means (not documented by Infor): a fixed period, or the last `time_period_ms`.
ThrottleWindow = Literal["fixed", "sliding"]
#: How the rate-smoothing delay grows past `delay_after_count` (not documented by Infor).
DelayGrowth = Literal["constant", "linear"]


class ThrottlePolicy(BaseModel):
    """A tenant-wide throttling policy: every caller shares it (like an endpoint policy on the Gateway).

    - spike arrest (`max_requests_per_period`, None = none): `windowed` counts accepted requests per period and
      rejects the (N+1)th with 429; `smoothed` (Apigee-style) spreads N per period into one request every period/N
      and rejects (429) a request that comes earlier than that after the last accepted one — so a burst of N fails
      although the period total is within N.
    - the period (`window`; Infor does not document which): `fixed` — the count resets at period boundaries, a
      period starting at the first request after the previous one ended (so N at the end of one period and N at the
      start of the next pass: 2N within less than one period); `sliding` — the count is of the accepted requests in
      the last `time_period_ms` (never more than N in any interval of one period). The window decides the count of
      `windowed` spike arrest and of rate smoothing; `smoothed` spike arrest only looks at the last accepted request.
    - rate smoothing: once `delay_after_count` accepted requests are in the period, each further one is delayed by
      `delay_factor_ms` (`delay_growth="constant"`), or the k-th one past the count by k * `delay_factor_ms`
      (`"linear"`); whether Infor scales the delay with the count is not documented.
    - rejected (429) requests never count.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    time_period_ms: int = Field(default=1000, gt=0)
    max_requests_per_period: int | None = Field(default=50, ge=1)
    delay_after_count: int | None = Field(default=None, ge=0)
    delay_factor_ms: int = Field(default=0, ge=0)
    mode: ThrottleMode = "windowed"
    window: ThrottleWindow = "fixed"
    delay_growth: DelayGrowth = "constant"

    @classmethod
    def from_xml(
        cls,
        text: str,
        *,
        mode: ThrottleMode = "windowed",
        window: ThrottleWindow = "fixed",
        delay_growth: DelayGrowth = "constant",
    ) -> ThrottlePolicy:
        """Load the Gateway admin's XML form (`<throttling>` with `timePeriodInMilliseconds`, `rateSmoothing`,
        `spikeArrest`); `rateSmoothing` and `spikeArrest` are optional, their children required. The XML does not
        say how the Gateway applies it: `mode`, `window` and `delay_growth` pick the simulator's model."""
        root = _parse_xml(text)
        if _local(root.tag) != "throttling":
            raise ValueError(f"expected a <throttling> policy, got <{_local(root.tag)}>")
        enabled = root.get("enabled", "true").strip().lower() != "false"
        period = _int_child(root, "timePeriodInMilliseconds")
        delay_after: int | None = None
        delay_factor = 0
        smoothing = _child(root, "rateSmoothing")
        if smoothing is not None:
            delay_after = _int_child(smoothing, "delayAfterCount")
            delay_factor = _int_child(smoothing, "delayFactorInMilliseconds")
        max_requests: int | None = None
        spike = _child(root, "spikeArrest")
        if spike is not None:
            max_requests = _int_child(spike, "maxRequestsPerPeriod")
        return cls(
            enabled=enabled,
            time_period_ms=period,
            max_requests_per_period=max_requests,
            delay_after_count=delay_after,
            delay_factor_ms=delay_factor,
            mode=mode,
            window=window,
            delay_growth=delay_growth,
        )

    @classmethod
    def from_baas_json(
        cls,
        data: dict[str, Any],
        *,
        mode: ThrottleMode = "windowed",
        window: ThrottleWindow = "fixed",
        delay_growth: DelayGrowth = "constant",
    ) -> ThrottlePolicy:
        """Load the BaaS manifest's flat JSON form (`"rateSmoothing.delayAfterCount": 500`, …); `mode`, `window` and
        `delay_growth` pick the simulator's model as for `from_xml`."""
        delay_after = data.get("rateSmoothing.delayAfterCount")
        max_requests = data.get("spikeArrest.maxRequestsPerPeriod")
        return cls(
            time_period_ms=int(data["timePeriodInMilliseconds"]),
            max_requests_per_period=None if max_requests is None else int(max_requests),
            delay_after_count=None if delay_after is None else int(delay_after),
            delay_factor_ms=int(data.get("rateSmoothing.delayFactorInMilliseconds", 0)),
            mode=mode,
            window=window,
            delay_growth=delay_growth,
        )


class LatencyProfile(BaseModel):
    """Added latency per accepted request: `base_ms` plus a uniform random `0..jitter_ms`."""

    model_config = ConfigDict(extra="forbid")

    base_ms: float = Field(default=0, ge=0)
    jitter_ms: float = Field(default=0, ge=0)


def _default_status_weights() -> dict[int, float]:
    return {500: 1.0, 502: 1.0, 503: 1.0, 504: 1.0}


class FaultProfile(BaseModel):
    """Injected failures on accepted requests (rolled in this order, each with its own probability).

    - `timeout_rate`: the target is slow: the request is processed, but the Gateway answers 504 after
      `gateway_timeout_s` (60 s on the real Gateway) — the caller cannot know the outcome.
    - `error_rate`: a 5xx without reaching the target, the status drawn by `status_weights`.
    - `drop_rate`: the request is processed and the connection is cut in the middle of the response.
    """

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(default=0.0, ge=0, le=1)
    status_weights: dict[int, float] = Field(default_factory=_default_status_weights)
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    gateway_timeout_s: float = Field(default=60.0, ge=0)
    drop_rate: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _check_weights(self) -> FaultProfile:
        if not self.status_weights or any(w < 0 for w in self.status_weights.values()):
            raise ValueError("status_weights needs at least one status with a non-negative weight")
        if sum(self.status_weights.values()) <= 0:
            raise ValueError("status_weights must not all be zero")
        if any(not 500 <= status <= 599 for status in self.status_weights):
            raise ValueError("status_weights keys must be 5xx statuses")
        return self


def _both_encodings() -> list[Literal["NONE", "BASE64"]]:
    return ["NONE", "BASE64"]


class IonSimConfig(BaseModel):
    """The whole simulator: tenant identity and credentials, token lifetime, Gateway policies, the M3 part."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    tenant: str = "M3BRIDGE_TST"
    app_name: str = "m3bridge-sim"
    client_id: str = ""  # "" = f"{tenant}~{app_name}"
    client_secret: SecretStr = SecretStr("")  # "" = derived from the seed
    saak: str = ""  # "" = f"{tenant}#svc-account"
    sask: SecretStr = SecretStr("")  # "" = derived from the seed
    ev: str = "U100000001"
    token_ttl_s: float = Field(default=7200, ge=0)
    refresh_token_ttl_s: float = Field(default=8 * 3600, ge=0)
    issue_refresh_tokens: bool = True
    throttle: ThrottlePolicy = Field(default_factory=ThrottlePolicy)
    retry_after_s: float | None = Field(default=1.0, ge=0)  # None: no Retry-After (the real Gateway documents none)
    # Record when the simulator's own event loop runs late (stats `late_loop`): it counts a request against the
    # throttling policy only when the loop gets to it, so a stall on a busy machine moves requests between periods.
    probe_loop: bool = False
    latency: LatencyProfile = Field(default_factory=LatencyProfile)
    faults: FaultProfile = Field(default_factory=FaultProfile)
    m3: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of simulators.ion.m3.M3Config
    # ION BODs published on M3 data changes (simulators/ion/bods.py), delivered as ION does to bod_target_url (None =
    # not sent): with bod_protocol "ims" it is the IMS end point's base URL (bod-listener's /ims) and each BOD is an
    # IMS v3 multipartMessage, its payload encoded as bod_encodings list in turn; "raw" POSTs the bare XML there
    # (a forwarder). bod_headers go with every request (e.g. the API key the Gateway adds for the target); non-2xx
    # answers are retried bod_retry_attempts times with exponential backoff.
    bod_target_url: str | None = None
    bod_headers: dict[str, str] = Field(default_factory=dict)
    bod_protocol: Literal["ims", "raw"] = "ims"
    bod_encodings: list[Literal["NONE", "BASE64"]] = Field(default_factory=_both_encodings, min_length=1)
    bod_retry_attempts: int = Field(default=5, ge=1)
    bod_retry_backoff_s: float = Field(default=0.5, ge=0)
    bod_location: str = ""  # the BODID location part (M3 BOD Processor: warehouse/facility; inferred)

    @model_validator(mode="after")
    def _fill_identities(self) -> IonSimConfig:
        if not self.client_id:
            self.client_id = f"{self.tenant}~{self.app_name}"
        if not self.saak:
            self.saak = f"{self.tenant}#svc-account"
        if not self.client_secret.get_secret_value():
            self.client_secret = SecretStr(_derive(self.seed, "client_secret"))
        if not self.sask.get_secret_value():
            self.sask = SecretStr(_derive(self.seed, "sask"))
        return self
