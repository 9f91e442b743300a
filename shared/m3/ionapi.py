"""The ION API credentials file (`.ionapi`), as downloaded from ION API → Authorized Apps.

It holds live secrets: only token-service reads it, and nothing here ever prints `cs` or `sask`.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError


class IonApiFileError(ValueError):
    """The `.ionapi` file is missing, unreadable or lacks keys; the message names the problem, never a secret."""


class IonApiCredentials(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant: str = Field(alias="ti", min_length=1)
    client_id: str = Field(alias="ci", min_length=1)
    client_secret: SecretStr = Field(alias="cs")
    ion_api_url: str = Field(alias="iu", min_length=1, description="Gateway base URL")
    auth_server_url: str = Field(alias="pu", min_length=1, description="Authorization server base URL")
    token_path: str = Field("token.oauth2", alias="ot")
    revoke_path: str = Field("revoke_token.oauth2", alias="or")
    app_name: str = Field("", alias="cn")
    service_account_access_key: str = Field("", alias="saak")
    service_account_secret_key: SecretStr = Field(SecretStr(""), alias="sask")

    @property
    def grant_type(self) -> str:
        """Backend Service apps with a service account use the password grant; the others client credentials."""
        has_account = self.service_account_access_key and self.service_account_secret_key.get_secret_value()
        return "password" if has_account else "client_credentials"

    @property
    def token_url(self) -> str:
        return _join(self.auth_server_url, self.token_path)

    @property
    def revoke_url(self) -> str:
        return _join(self.auth_server_url, self.revoke_path)

    @property
    def m3_base_url(self) -> str:
        """Where M3 MI programs are reached through the Gateway: `{iu}/{ti}/M3`."""
        return f"{self.ion_api_url.rstrip('/')}/{self.tenant}/M3"

    def secrets(self) -> list[str]:
        return [
            s for s in (self.client_secret.get_secret_value(), self.service_account_secret_key.get_secret_value()) if s
        ]

    @classmethod
    def load(cls, path: Path) -> IonApiCredentials:
        try:
            raw = json.loads(path.read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            raise IonApiFileError(f"no .ionapi file at {path}") from None
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8, not JSON, ints over 4300 digits
            raise IonApiFileError(f"{path} is not a readable .ionapi JSON file ({type(exc).__name__})") from None
        if not isinstance(raw, dict):
            raise IonApiFileError(f"{path} is not a JSON object")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            # Name the keys, never echo the values (they may be secrets).
            problems = ", ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise IonApiFileError(f"{path}: {problems}") from None


def _join(base: str, path: str) -> str:
    if path.startswith(("http://", "https://")):
        return path
    return base if base.endswith("/") and not path else f"{base.rstrip('/')}/{path.lstrip('/')}"
