"""The shared ION token: one fetch for many callers, refresh ahead of expiry, one refresh on a 401,
keeps serving while the IdP fails, revoked at shutdown. The IdP is an httpx.MockTransport."""

import asyncio
import base64
import json
from urllib.parse import parse_qs

import httpx
import pytest

from services.token_service.tokens import TokenKeeper, TokenUnavailableError
from shared.m3.ionapi import IonApiCredentials, IonApiFileError

IONAPI = {
    "ti": "TST", "cn": "bridge", "dt": "12", "ci": "TST~client", "cs": "client-secret-value",
    "iu": "https://ion.example", "pu": "https://sso.example/TST/as/", "oa": "authorization.oauth2",
    "ot": "token.oauth2", "or": "revoke_token.oauth2", "ev": "U1", "v": "1.0",
    "saak": "TST#svc", "sask": "service-account-secret",
}  # fmt: skip


class FakeIdP:
    def __init__(self, expires_in: int = 7200) -> None:
        self.expires_in = expires_in
        self.requests: list[dict] = []
        self.revoked: list[str] = []
        self.fail = False
        self.delay = 0.0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        basic = base64.b64decode(request.headers["authorization"].split()[1]).decode()
        if request.url.path.endswith("revoke_token.oauth2"):
            self.revoked.append(form["token"])
            return httpx.Response(200)
        self.requests.append({**form, "basic": basic})
        await asyncio.sleep(self.delay)
        if self.fail:
            return httpx.Response(503, json={"error": "temporarily_unavailable"})
        token = {"access_token": f"tok-{len(self.requests)}", "token_type": "Bearer", "expires_in": self.expires_in}
        return httpx.Response(200, json=token)


def keeper(idp: FakeIdP, **overrides: object) -> TokenKeeper:
    credentials = IonApiCredentials.model_validate({**IONAPI, **overrides})
    return TokenKeeper(credentials, refresh_ahead_s=300, transport=httpx.MockTransport(idp))


async def refresh_ended(tokens: TokenKeeper) -> None:
    """The signal that the background refresh `token()` started has ended (fetched or failed)."""
    refresh = tokens._refresh
    assert refresh is not None, "no refresh was started"
    await asyncio.wait({refresh}, timeout=5)
    assert refresh.done()


async def test_password_grant_with_service_account_and_basic_client_auth() -> None:
    idp = FakeIdP()
    tokens = keeper(idp)
    assert (await tokens.token()).access_token == "tok-1"
    request = idp.requests[0]
    assert request["grant_type"] == "password"
    assert (request["username"], request["password"]) == ("TST#svc", "service-account-secret")
    assert request["basic"] == "TST~client:client-secret-value"


async def test_client_credentials_without_a_service_account() -> None:
    idp = FakeIdP()
    tokens = keeper(idp, saak="", sask="")
    await tokens.token()
    assert idp.requests[0]["grant_type"] == "client_credentials"


async def test_many_concurrent_callers_cause_one_fetch() -> None:
    idp = FakeIdP()
    idp.delay = 0.05
    tokens = keeper(idp)
    results = await asyncio.gather(*(tokens.token() for _ in range(50)))
    assert {t.access_token for t in results} == {"tok-1"}
    assert len(idp.requests) == 1


async def test_refresh_ahead_of_expiry_keeps_serving_the_current_token() -> None:
    idp = FakeIdP(expires_in=10)  # refresh starts in the last fifth: after 8 s
    tokens = keeper(idp)
    first = await tokens.token()
    object.__setattr__(first, "refresh_at", 0)  # as if 8 s had passed
    assert (await tokens.token()).access_token == "tok-1"  # still valid: returned at once
    await refresh_ended(tokens)
    assert (await tokens.token()).access_token == "tok-2"
    assert len(idp.requests) == 2


async def test_a_reported_401_refreshes_once_however_many_report_it() -> None:
    idp = FakeIdP()
    tokens = keeper(idp)
    stale = await tokens.token()
    reports = await asyncio.gather(*(tokens.invalidate(stale.fingerprint) for _ in range(5)))
    assert reports.count(True) == 1
    assert (await tokens.token()).access_token == "tok-2"
    assert await tokens.invalidate(stale.fingerprint) is False  # an old token: already replaced
    assert len(idp.requests) == 2


async def test_a_failing_refresh_keeps_the_valid_token_and_says_so() -> None:
    idp = FakeIdP(expires_in=10)
    tokens = keeper(idp)
    first = await tokens.token()
    idp.fail = True
    object.__setattr__(first, "refresh_at", 0)
    assert (await tokens.token()).access_token == "tok-1"
    await refresh_ended(tokens)
    assert tokens.last_error is not None
    assert "failing" in str(tokens.status()["refresh"])
    object.__setattr__(first, "expires_at", 0)  # now it has expired too
    with pytest.raises(TokenUnavailableError):
        await tokens.token()


async def test_revoked_on_shutdown() -> None:
    idp = FakeIdP()
    tokens = keeper(idp)
    await tokens.token()
    await tokens.revoke()
    await tokens.close()
    assert idp.revoked == ["tok-1"]


def test_ionapi_file_errors_never_show_secrets(tmp_path) -> None:
    path = tmp_path / "tenant.ionapi"
    path.write_text(json.dumps({k: v for k, v in IONAPI.items() if k != "ci"}))
    with pytest.raises(IonApiFileError, match="ci") as caught:
        IonApiCredentials.load(path)
    assert "client-secret-value" not in str(caught.value)
    path.write_text("{not json")
    with pytest.raises(IonApiFileError, match="not a readable"):
        IonApiCredentials.load(path)
    with pytest.raises(IonApiFileError, match=r"no \.ionapi file"):
        IonApiCredentials.load(tmp_path / "missing.ionapi")


def test_ionapi_urls() -> None:
    credentials = IonApiCredentials.model_validate(IONAPI)
    assert credentials.token_url == "https://sso.example/TST/as/token.oauth2"
    assert credentials.revoke_url == "https://sso.example/TST/as/revoke_token.oauth2"
    assert credentials.m3_base_url == "https://ion.example/TST/M3"
    assert "client-secret-value" not in repr(credentials)
