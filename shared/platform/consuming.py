"""Consuming without poison loops: every subscriber decodes, retries and dead-letters the same way.

A service declares a subscriber with `ServiceRuntime.subscriber(topic, ...)`; faststream hands the raw bytes to
`Consumer.consume`, which

- validates them against the topic's pydantic model itself, so a message that is not UTF-8, not JSON or not a
  valid payload is dead-lettered at once (`undecodable` / `invalid`) with the validation errors and the raw bytes,
  instead of failing inside faststream before any handler runs and being redelivered forever;
- calls the handler, retrying a retryable failure in process with exponential backoff and jitter up to a
  per-message attempt limit, then dead-letters it (`retries-exhausted`) with the last error, its class and the
  attempt count; an exception whose `retryable` is False is dead-lettered at once (`not-retryable`);
- returns normally after a dead letter is on the broker, so the subscriber's ack policy commits the offset and
  the partition moves on (a dead letter that cannot be published raises: the message is redelivered, not lost);
- records per subscriber what it is doing, for `/healthz` (stalled subscribers) and a gauge.

Nothing here needs a broker: the dead-letter sender is passed in.
"""

# No `from __future__ import annotations`: faststream reads the signature of the function `entry` returns at runtime.
import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from shared.platform.consumer_progress import Consumers as Consumers, Progress as Progress
from shared.platform.lanes import Lanes
from shared.platform.metrics import message_retries, messages_discarded

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

UNDECODABLE = "undecodable"
"""Not UTF-8, not JSON, or empty."""
INVALID = "invalid"
"""JSON, but not a valid payload of the topic's model (a missing field, a wrong type, ...)."""
RETRIES_EXHAUSTED = "retries-exhausted"
"""The handler kept failing for retryable reasons up to the attempt limit."""
NOT_RETRYABLE = "not-retryable"
"""The handler raised an exception whose `retryable` is False."""

Handler = Callable[[Any, Any], Awaitable[Any]]
"""`async def handler(payload: Model, message: KafkaMessage) -> reply or None`."""


class DeadLetterSender(Protocol):
    async def __call__(
        self,
        message: Any,
        *,
        error_class: str,
        error_message: str,
        attempts: int,
        details: Mapping[str, Any] | None,
    ) -> None: ...


FailureReply = Callable[[Any, "Failure"], Any]
"""Answers a request whose handling failed (request/reply subscribers): called once the request is dead-lettered,
awaited when it returns an awaitable (a reply it sends itself); its result is returned to faststream."""

GiveUpNotice = Callable[[Any, "Failure"], Awaitable[None]]
"""Told (payload, failure) after a valid message was dead-lettered because its handling failed, so the service can
say so downstream (order-writer publishes a held OrderResult); not called for undecodable messages."""


def is_retryable(exc: BaseException) -> bool:
    """Exceptions say so with `retryable`; one that does not say (a database outage, a bug) is given the attempts
    too. Cancellation and other BaseExceptions are never retried."""
    return isinstance(exc, Exception) and getattr(exc, "retryable", True) is not False


@dataclass(frozen=True)
class Failure:
    """Why a message goes to the dead letters."""

    error_class: str
    error_message: str
    attempts: int = 1
    details: dict[str, Any] = field(default_factory=dict)


class PoisonMessageError(ValueError):
    """The bytes are not a valid payload of the model; `failure` says why."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.error_message)
        self.failure = failure


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(message)"


def decode(model: type[M], body: bytes) -> M:
    """The payload, or PoisonMessageError saying whether the bytes are not even JSON or not a valid `model`."""
    if not body:
        raise PoisonMessageError(Failure(UNDECODABLE, "empty message body", details={"model": model.__name__}))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PoisonMessageError(
            Failure(UNDECODABLE, f"not UTF-8 text: {exc}", details={"model": model.__name__})
        ) from None
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        listed = [{"loc": _location(e["loc"]), "type": e["type"], "msg": e["msg"]} for e in errors[:50]]
        if any(e["type"] == "json_invalid" for e in errors):
            error_class, message = UNDECODABLE, f"not JSON: {listed[0]['msg']}"
        else:
            count = f"{len(errors)} validation error{'s' if len(errors) != 1 else ''}"
            reasons = "; ".join(f"{e['loc']}: {e['msg']}" for e in listed)
            error_class, message = INVALID, f"not a valid {model.__name__} ({count}): {reasons}"
        raise PoisonMessageError(
            Failure(error_class, message, details={"model": model.__name__, "errors": listed})
        ) from None


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per message and the waits between them: `initial_s` doubling up to `max_s`, each plus a random
    jitter of up to `initial_s`. `budget_s` bounds one message's whole handling, attempts and waits together (an
    attempt still running when it is spent is cancelled): kept below the consumer's max.poll.interval, so the
    group never hands the partition to another consumer while this one still works on the message."""

    max_attempts: int = 8
    initial_s: float = 0.5
    max_s: float = 10.0
    budget_s: float | None = None


class TimeBudgetSpentError(TimeoutError):
    """The message's time budget ran out; what was done is recorded, a replay resumes it."""


def _origin(message: Any) -> str:
    record = getattr(message, "raw_message", None)
    return f"{getattr(record, 'topic', '?')}[{getattr(record, 'partition', '?')}]@{getattr(record, 'offset', '?')}"


class _StopWhen(stop_base):
    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.predicate()


class Consumer:
    """One subscriber's decode → handle (with retries) → dead-letter path. `consume` is what faststream calls."""

    def __init__(
        self,
        *,
        service: str,
        subscriber: str,
        model: type[BaseModel] | None,
        handler: Handler,
        dead_letter: DeadLetterSender,
        ack_policy: AckPolicy,
        policy: RetryPolicy,
        progress: Progress,
        reply_on_failure: FailureReply | None = None,
        on_give_up: GiveUpNotice | None = None,
        dead_letters: bool = True,
        commits_elsewhere: bool = False,
        stopping: Callable[[], bool] = lambda: False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.service = service
        self.subscriber = subscriber
        self.model = model
        self.handler = handler
        self.dead_letter = dead_letter
        self.ack_policy = ack_policy
        self.policy = policy
        self.progress = progress
        self.reply_on_failure = reply_on_failure
        self.on_give_up = on_give_up
        self.dead_letters = dead_letters
        self.commits_elsewhere = commits_elsewhere  # lanes commit per partition; an ack would commit them all
        self.stopping = stopping
        self.sleep = sleep

    async def consume(self, body: bytes, message: Any) -> Any:
        """`model` None hands the handler the bytes themselves (raw documents: XML BODs)."""
        token = self.progress.begin()
        try:
            payload: Any = body
            if self.model is not None:
                try:
                    payload = decode(self.model, body)
                except PoisonMessageError as poison:
                    return await self._give_up(message, body, poison.failure)
            return await self._handle(payload, message, body, token)
        finally:
            self.progress.end(token)

    async def _handle(self, payload: Any, message: Any, body: bytes, token: int) -> Any:
        attempts = 0
        budget = self.policy.budget_s
        began = time.monotonic()

        def spent() -> bool:
            # No attempt is started that could not get a tenth of the budget.
            return budget is not None and time.monotonic() - began > budget * 0.9

        retrying = AsyncRetrying(
            stop=stop_any(stop_after_attempt(self.policy.max_attempts), _StopWhen(self.stopping), _StopWhen(spent)),
            wait=wait_exponential_jitter(
                multiplier=self.policy.initial_s, max=self.policy.max_s, jitter=self.policy.initial_s
            ),
            retry=retry_if_exception(is_retryable),
            before_sleep=self._before_retry,
            sleep=self.sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    self.progress.attempted(token, attempts)
                    if budget is None:
                        return await self.handler(payload, message)
                    remaining = max(budget - (time.monotonic() - began), 0.0)
                    try:
                        async with asyncio.timeout(remaining):
                            return await self.handler(payload, message)
                    except TimeoutError as late:
                        if time.monotonic() - began < budget:
                            raise  # the handler's own timeout, not the budget
                        raise TimeBudgetSpentError(
                            f"the message's time budget of {budget:g}s ran out during attempt {attempts}"
                        ) from late
        except Exception as exc:
            if is_retryable(exc) and self.stopping():
                # Shutting down: leave the message uncommitted for whoever consumes the partition next.
                log.warning("%s: stopping while retrying %s (attempt %d): %s", self.subscriber, _origin(message),
                            attempts, exc)  # fmt: skip
                raise
            error_class = RETRIES_EXHAUSTED if is_retryable(exc) else NOT_RETRYABLE
            failure = Failure(
                error_class,
                f"{type(exc).__name__}: {exc}",
                attempts=attempts,
                details={"exception": f"{type(exc).__module__}.{type(exc).__qualname__}"},
            )
            # A traceback only for what nobody classified (likely a bug); our own errors say enough.
            reply = await self._give_up(message, body, failure, exc_info=not hasattr(exc, "retryable"))
            if self.on_give_up is not None and self.dead_letters:
                try:
                    await self.on_give_up(payload, failure)
                except Exception:  # the dead letter is on the broker: the message is not lost, only the notice
                    log.exception("%s: the notice for %s, dead-lettered, could not be sent", self.subscriber,
                                  _origin(message))  # fmt: skip
            return reply
        raise AssertionError("unreachable: tenacity either returns, raises or retries")  # pragma: no cover

    def _before_retry(self, state: RetryCallState) -> None:
        self.progress.retried += 1
        message_retries.labels(self.service, self.subscriber).inc()
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s: attempt %d of %d failed, retrying in %.1fs: %s: %s", self.subscriber, state.attempt_number,
                    self.policy.max_attempts, wait, type(exc).__name__, exc)  # fmt: skip

    async def _give_up(self, message: Any, body: bytes, failure: Failure, *, exc_info: bool = False) -> Any:
        origin = _origin(message)
        if self.dead_letters:
            await self.dead_letter(
                message,
                error_class=failure.error_class,
                error_message=failure.error_message,
                attempts=failure.attempts,
                details=failure.details,
            )
            self.progress.dead_lettered += 1
            log.error("%s: %s dead-lettered after %d attempt(s) (%s): %s", self.subscriber, origin, failure.attempts,
                      failure.error_class, failure.error_message, exc_info=exc_info)  # fmt: skip
        else:
            topic = str(getattr(getattr(message, "raw_message", None), "topic", ""))
            messages_discarded.labels(self.service, topic, failure.error_class).inc()
            log.warning("%s: %s skipped (%s, %d bytes): %s", self.subscriber, origin, failure.error_class, len(body),
                        failure.error_message, exc_info=exc_info)  # fmt: skip
        if self.ack_policy is AckPolicy.MANUAL and not self.commits_elsewhere:
            await message.ack()  # the handler that would have acknowledged it never will
        if self.reply_on_failure is not None:
            reply = self.reply_on_failure(message, failure)
            return await reply if inspect.isawaitable(reply) else reply
        return None


async def raw_body(message: Any) -> bytes:
    """faststream decoder that hands the handler the bytes as received (faststream's own decoder would fail on
    a non-JSON body marked `application/json`, before any handler runs)."""
    body = message.body
    return body if isinstance(body, bytes) else bytes(body or b"")


def entry(consumer: Consumer, name: str) -> Callable[..., Awaitable[Any]]:
    """The function faststream subscribes: the raw body (see `raw_body`) and the message, nothing decoded."""

    async def consume(body: bytes, message: KafkaMessage) -> Any:
        return await consumer.consume(body, message)

    consume.__name__ = consume.__qualname__ = name
    return consume


def lanes_entry(consumer: Consumer, lanes: Lanes, name: str) -> Callable[..., Awaitable[Any]]:
    """Like `entry`, but the message is handed to its key's lane and faststream is answered at once."""

    async def consume(body: bytes, message: KafkaMessage) -> None:
        await lanes.submit(message, lambda: consumer.consume(body, message))

    consume.__name__ = consume.__qualname__ = name
    return consume
