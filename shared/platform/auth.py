"""The one authentication scheme of the bridge's own HTTP API (operator actions, availability reads).

A caller sends a key as `Authorization: Bearer <key>` or `X-API-Key: <key>`. Operator routes (sync now, ...)
accept the operator key (`M3B_OPERATOR_KEY`); read routes (availability) the read key (`M3B_READ_KEY`) or the
operator key. Keys are compared in constant time on the bytes as sent, so a key that is not ASCII is a 401 like any
other wrong key. A route whose key is not configured answers 401 to everyone (fail closed).

A route is protected by `dependencies=[runtime.require("operator")]`; the runtime's route class checks the key
before the body is read, and the dependency puts the security scheme into the OpenAPI document. Inbound deliveries
(QuoteWerks webhooks, ION BODs) have their own authentication (what their senders can send); token-service's
callers use this scheme with a key per calling service (`CallerGuard`).
"""

# No `from __future__ import annotations`: FastAPI reads the dependency's signature at runtime.
import hmac
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Scope

Role = Literal["operator", "read", "service"]
#: The roles of the bridge's own API (`runtime.require`); "service" is token-service's callers (`CallerGuard`).
ROLES: tuple[Role, ...] = ("operator", "read")
API_KEY_HEADER = "X-API-Key"

BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearerKey",
    description="`Authorization: Bearer <key>`: the operator key (M3B_OPERATOR_KEY) for operator actions, the read "
    "key (M3B_READ_KEY) or the operator key for reads.",
)
API_KEY = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    scheme_name="apiKey",
    description="The same key in `X-API-Key: <key>`, for callers that cannot send an Authorization header.",
)


class NotAuthenticatedError(HTTPException):
    """401 with `WWW-Authenticate: Bearer`; `reason` labels the refusal in logs and metrics."""

    def __init__(self, reason: str) -> None:
        super().__init__(401, "not authenticated", headers={"WWW-Authenticate": "Bearer"})
        self.reason = reason


def presented_keys(scope: Scope) -> list[bytes]:
    """The keys a request presents, as sent (bytes): the Bearer credentials and the X-API-Key header."""
    found: list[bytes] = []
    api_key = API_KEY_HEADER.lower().encode()
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                found.append(credentials.strip())
        elif name == api_key and value.strip():
            found.append(value.strip())
    return found


class KeyGuard:
    """Admits a request that presents one of `keys` (empty: nobody)."""

    def __init__(self, role: Role, keys: Iterable[str]) -> None:
        self.role = role
        self.keys = [key.encode("utf-8") for key in keys if key]

    @property
    def locked(self) -> bool:
        return not self.keys

    def check(self, scope: Scope) -> None:
        presented = presented_keys(scope)
        if not presented:
            raise NotAuthenticatedError("unauthenticated")
        if self.locked:
            raise NotAuthenticatedError("key_not_configured")
        # Every presented key against every accepted one: the time taken does not depend on which one matched.
        matched = False
        for candidate in presented:
            for key in self.keys:
                matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise NotAuthenticatedError("wrong_key")

    def allows(self, scope: Scope) -> bool:
        """Whether the request presents one of the keys (no answer is sent either way)."""
        try:
            self.check(scope)
        except NotAuthenticatedError:
            return False
        return True

    def dependency(self) -> Any:
        """The FastAPI dependency: checks the key (again; the route class did first) and declares the schemes."""
        role = self.role

        async def authenticated(
            request: Request,
            _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER, scopes=[role])],
            _api_key: Annotated[str | None, Security(API_KEY, scopes=[role])],
        ) -> None:
            self.check(request.scope)

        authenticated.guard = self  # type: ignore[attr-defined]
        authenticated.__name__ = f"{role}_key"
        dependency: Any = Depends(authenticated)
        return dependency


class CallerGuard(KeyGuard):
    """Admits a request that presents one of the callers' keys, and tells which caller it is: token-service's
    services, each with its own key (`M3B_SERVICE_KEYS`)."""

    def __init__(self, keys_by_caller: Mapping[str, str]) -> None:
        self.callers = {caller: key.encode("utf-8") for caller, key in keys_by_caller.items() if key}
        super().__init__("service", keys_by_caller.values())

    def caller(self, scope: Scope) -> str:
        """The caller whose key the request presents; NotAuthenticatedError as `check` raises it."""
        self.check(scope)
        found = ""
        # Every presented key against every caller's: the time taken does not depend on which one matched.
        for candidate in presented_keys(scope):
            for caller, key in self.callers.items():
                if hmac.compare_digest(candidate, key):
                    found = found or caller
        return found

    def caller_dependency(self) -> Any:
        """A FastAPI dependency giving the handler the caller's name (the route's `dependencies` check the key)."""

        async def calling_service(request: Request) -> str:
            return self.caller(request.scope)

        dependency: Any = Depends(calling_service)
        return dependency


def guards_of(dependencies: Sequence[Any]) -> list[KeyGuard]:
    """The key guards among a route's (or a dependant's) dependencies."""
    found = []
    for dependency in dependencies:
        call = getattr(dependency, "dependency", None) or getattr(dependency, "call", None)
        guard = getattr(call, "guard", None)
        if isinstance(guard, KeyGuard):
            found.append(guard)
    return found


class GuardedRoute(APIRoute):
    """An APIRoute that checks its key guards before FastAPI reads and parses the body: a caller without the key
    never has its body read. Routes without a guard behave like APIRoute."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        guards = guards_of(kwargs.get("dependencies") or ())
        if guards:
            roles = " or ".join(sorted({guard.role for guard in guards}))
            responses = dict(kwargs.get("responses") or {})
            responses.setdefault(
                401, {"description": f"no valid {roles} key (`Authorization: Bearer <key>` or `X-API-Key: <key>`)"}
            )
            kwargs["responses"] = responses
        self.guards = guards  # before APIRoute's __init__: it builds the handler
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not self.guards:
            return handler
        guards = self.guards

        async def checked(request: Request) -> Response:
            for guard in guards:
                guard.check(request.scope)
            return await handler(request)

        return checked
