"""The ION OAuth 2 authorization server (the `pu` of an `.ionapi` file): token and revoke endpoints.

Behaviour copied from the real one (m3-research.md §4): password grant with the service account (`saak`/`sask`)
and client authentication as HTTP Basic `ci:cs` or `client_id`/`client_secret` form fields; client credentials;
refresh tokens; revocation (RFC 7009). Errors follow RFC 6749 §5.2. Tokens are random opaque strings.
Secrets (client secret, sask, tokens) are never logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote_plus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from simulators.ion.config import IonSimConfig

TokenKind = Literal["access", "refresh"]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass
class TokenRecord:
    token: str
    kind: TokenKind
    subject: str  # the user: saak for the password grant, the client id for client credentials
    client_id: str
    grant_type: str
    expires_at: float  # time.monotonic()
    revoked: bool = False
    refresh_token: str | None = None  # the refresh token issued with this access token

    def active(self, now: float | None = None) -> bool:
        return not self.revoked and (time.monotonic() if now is None else now) < self.expires_at


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str, *, basic_challenge: bool = False) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.basic_challenge = basic_challenge

    def response(self) -> JSONResponse:
        headers = dict(_NO_STORE)
        if self.basic_challenge:
            headers["WWW-Authenticate"] = 'Basic realm="ion"'
        return JSONResponse(
            {"error": self.error, "error_description": self.description}, status_code=self.status, headers=headers
        )


@dataclass
class AuthStats:
    issued: Counter[str] = field(default_factory=Counter)  # by grant type
    revocations: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # by OAuth error code

    def snapshot(self) -> dict[str, Any]:
        return {
            "tokens_issued": dict(self.issued),
            "tokens_issued_total": sum(self.issued.values()),
            "revocations": self.revocations,
            "errors": dict(self.errors),
        }


class AuthServer:
    """Token store and grant logic; the HTTP layer is `auth_router`."""

    def __init__(self, config: IonSimConfig) -> None:
        self.config = config
        self.tokens: dict[str, TokenRecord] = {}
        self.stats = AuthStats()

    # -- token store -------------------------------------------------------------------------------------------
    def _new_token(
        self, kind: TokenKind, subject: str, client_id: str, grant_type: str, ttl: float, refresh: str | None = None
    ) -> TokenRecord:
        record = TokenRecord(
            token=secrets.token_urlsafe(32),
            kind=kind,
            subject=subject,
            client_id=client_id,
            grant_type=grant_type,
            expires_at=time.monotonic() + ttl,
            refresh_token=refresh,
        )
        self.tokens[record.token] = record
        return record

    def issue(self, subject: str, client_id: str, grant_type: str, *, with_refresh: bool) -> dict[str, Any]:
        """Issue an access token (and a refresh token when asked); the token endpoint's JSON body."""
        self._purge()
        refresh = None
        if with_refresh:
            refresh = self._new_token("refresh", subject, client_id, grant_type, self.config.refresh_token_ttl_s)
        access = self._new_token(
            "access",
            subject,
            client_id,
            grant_type,
            self.config.token_ttl_s,
            refresh.token if refresh is not None else None,
        )
        self.stats.issued[grant_type] += 1
        body: dict[str, Any] = {
            "access_token": access.token,
            "token_type": "Bearer",
            "expires_in": int(self.config.token_ttl_s),
        }
        if refresh is not None:
            body["refresh_token"] = refresh.token
        return body

    def validate(self, token: str) -> TokenRecord | None:
        """The active access token record, or None (unknown, expired, revoked, or a refresh token)."""
        record = self.tokens.get(token)
        if record is None or record.kind != "access" or not record.active():
            return None
        return record

    def revoke(self, token: str, client_id: str) -> bool:
        """Revoke a token issued to `client_id` (RFC 7009: unknown tokens are not an error).

        Revoking a refresh token also revokes the access tokens issued with it."""
        record = self.tokens.get(token)
        if record is None or record.client_id != client_id or record.revoked:
            return False
        record.revoked = True
        if record.kind == "refresh":
            for other in self.tokens.values():
                if other.refresh_token == token:
                    other.revoked = True
        self.stats.revocations += 1
        return True

    def expire_all(self, *, include_refresh: bool = True) -> int:
        """Expire every token now (simulator control plane, for 401 tests); returns how many were active."""
        now = time.monotonic()
        count = 0
        for record in self.tokens.values():
            if record.kind == "refresh" and not include_refresh:
                continue
            if record.active(now):
                count += 1
            record.expires_at = min(record.expires_at, now)
        return count

    def active_tokens(self) -> int:
        now = time.monotonic()
        return sum(1 for r in self.tokens.values() if r.kind == "access" and r.active(now))

    def _purge(self) -> None:
        """Forget tokens expired for more than a minute, so a long benchmark does not grow the store."""
        horizon = time.monotonic() - 60
        if len(self.tokens) > 1000:
            self.tokens = {k: r for k, r in self.tokens.items() if r.expires_at > horizon}

    # -- grants ------------------------------------------------------------------------------------------------
    def authenticate_client(self, authorization: str | None, form: dict[str, str]) -> str:
        """The client id, from HTTP Basic `ci:cs` or `client_id`/`client_secret` form fields (exactly one)."""
        body_id = form.get("client_id")
        body_secret = form.get("client_secret")
        basic = authorization is not None and authorization[:6].lower() == "basic "
        if basic and body_secret is not None:
            self.stats.errors["invalid_request"] += 1
            raise OAuthError(400, "invalid_request", "use one client authentication method, not two")
        if basic:
            assert authorization is not None
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
                raw_id, raw_secret = decoded.split(":", 1)
            except (binascii.Error, UnicodeDecodeError, ValueError):
                self.stats.errors["invalid_client"] += 1
                raise OAuthError(401, "invalid_client", "malformed Basic credentials", basic_challenge=True) from None
            client_id, client_secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        elif body_id is not None and body_secret is not None:
            client_id, client_secret = body_id, body_secret
        else:
            self.stats.errors["invalid_client"] += 1
            raise OAuthError(401, "invalid_client", "client authentication required", basic_challenge=True)
        expected_secret = self.config.client_secret.get_secret_value()
        ok_id = secrets.compare_digest(client_id.encode(), self.config.client_id.encode())
        ok_secret = secrets.compare_digest(client_secret.encode(), expected_secret.encode())
        if not (ok_id and ok_secret):
            self.stats.errors["invalid_client"] += 1
            raise OAuthError(401, "invalid_client", "client authentication failed", basic_challenge=basic)
        return client_id

    def token_grant(self, authorization: str | None, form: dict[str, str]) -> dict[str, Any]:
        client_id = self.authenticate_client(authorization, form)
        grant_type = form.get("grant_type", "")
        if grant_type == "password":
            username, password = form.get("username"), form.get("password")
            if username is None or password is None:
                self.stats.errors["invalid_request"] += 1
                raise OAuthError(400, "invalid_request", "username and password are required")
            ok_user = secrets.compare_digest(username.encode(), self.config.saak.encode())
            ok_pass = secrets.compare_digest(password.encode(), self.config.sask.get_secret_value().encode())
            if not (ok_user and ok_pass):
                self.stats.errors["invalid_grant"] += 1
                raise OAuthError(400, "invalid_grant", "invalid service account credentials")
            return self.issue(username, client_id, "password", with_refresh=self.config.issue_refresh_tokens)
        if grant_type == "client_credentials":
            return self.issue(client_id, client_id, "client_credentials", with_refresh=False)
        if grant_type == "refresh_token":
            token = form.get("refresh_token")
            if not token:
                self.stats.errors["invalid_request"] += 1
                raise OAuthError(400, "invalid_request", "refresh_token is required")
            record = self.tokens.get(token)
            if record is None or record.kind != "refresh" or record.client_id != client_id or not record.active():
                self.stats.errors["invalid_grant"] += 1
                raise OAuthError(400, "invalid_grant", "invalid refresh token")
            record.revoked = True  # rotate: the old refresh token is single-use
            return self.issue(record.subject, client_id, "refresh_token", with_refresh=True)
        if not grant_type:
            self.stats.errors["invalid_request"] += 1
            raise OAuthError(400, "invalid_request", "grant_type is required")
        self.stats.errors["unsupported_grant_type"] += 1
        raise OAuthError(400, "unsupported_grant_type", f"grant type {grant_type!r} is not supported")


async def _read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("application/x-www-form-urlencoded"):
        raise OAuthError(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
    try:
        parsed = parse_qs((await request.body()).decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise OAuthError(400, "invalid_request", "the body is not UTF-8") from None
    form: dict[str, str] = {}
    for key, values in parsed.items():
        if len(values) > 1:  # RFC 6749 §3.1: parameters MUST NOT be repeated
            raise OAuthError(400, "invalid_request", f"parameter {key!r} is repeated")
        form[key] = values[0]
    return form


def auth_router(server: AuthServer) -> APIRouter:
    """`POST /{tenant}/as/token.oauth2` and `POST /{tenant}/as/revoke_token.oauth2`."""
    tenant = server.config.tenant
    router = APIRouter(prefix=f"/{tenant}/as", tags=["oauth2"])

    @router.post("/token.oauth2")
    async def token(request: Request) -> Response:
        try:
            form = await _read_form(request)
            body = server.token_grant(request.headers.get("authorization"), form)
        except OAuthError as exc:
            return exc.response()
        return JSONResponse(body, headers=_NO_STORE)

    @router.post("/revoke_token.oauth2")
    async def revoke(request: Request) -> Response:
        try:
            form = await _read_form(request)
            client_id = server.authenticate_client(request.headers.get("authorization"), form)
            token_value = form.get("token")
            if not token_value:
                raise OAuthError(400, "invalid_request", "token is required")
        except OAuthError as exc:
            return exc.response()
        server.revoke(token_value, client_id)
        return Response(status_code=200)

    return router


# -- the .ionapi file ------------------------------------------------------------------------------------------
def ionapi_dict(config: IonSimConfig, base_url: str, *, service_account: bool = True) -> dict[str, str]:
    """The `.ionapi` JSON for this simulator at `base_url` (all the real keys; `saak`/`sask` for a Backend
    Service app with a service account, left out for a client-credentials app)."""
    base = base_url.rstrip("/")
    data = {
        "ti": config.tenant,
        "cn": config.app_name,
        "dt": "12",
        "ci": config.client_id,
        "cs": config.client_secret.get_secret_value(),
        "iu": base,
        "pu": f"{base}/{config.tenant}/as/",
        "oa": "authorization.oauth2",
        "ot": "token.oauth2",
        "or": "revoke_token.oauth2",
        "ev": config.ev,
        "v": "1.0",
    }
    if service_account:
        data["saak"] = config.saak
        data["sask"] = config.sask.get_secret_value()
    return data


def write_ionapi(path: str | Path, config: IonSimConfig, base_url: str, *, service_account: bool = True) -> Path:
    """Write the `.ionapi` file atomically with mode 0600 (it holds live secrets)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(ionapi_dict(config, base_url, service_account=service_account), indent=2) + "\n"
    fd, tmp_name = tempfile.mkstemp(prefix=".ionapi-", dir=target.parent)  # created 0600
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        tmp.chmod(0o600)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
