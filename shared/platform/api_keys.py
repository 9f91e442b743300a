"""A service's side of the bridge's one API key scheme: the dependency that protects a route, the guard per role
built from the settings, and the start-up line for a role whose key is not set."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from shared.platform.auth import ROLES, KeyGuard, Role
from shared.platform.settings import BridgeSettings

log = logging.getLogger("shared.platform.runtime")


class ApiKeys:
    """Part of `ServiceRuntime`: its `settings`, `app` and guards."""

    settings: BridgeSettings
    app: FastAPI
    _guards: dict[Role, KeyGuard]

    def require(self, role: Role) -> Any:
        """The dependency protecting a route with the bridge's one scheme: `dependencies=[runtime.require("operator")]`
        for operator actions, `"read"` for reads (the read key or the operator key). `Authorization: Bearer <key>` or
        `X-API-Key: <key>`; a wrong, missing or unconfigured key is a 401 before the body is read."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        return self._guard(role).dependency()

    def _guard(self, role: Role) -> KeyGuard:
        guard = self._guards.get(role)
        if guard is None:
            operator = self.settings.operator_key.get_secret_value()
            keys = [operator] if role == "operator" else [self.settings.read_key.get_secret_value(), operator]
            guard = self._guards[role] = KeyGuard(role, keys)
        return guard

    def _report_locked_routes(self) -> None:
        """One line at start-up per role whose key is not set: its routes refuse everyone until it is."""
        for role, guard in self._guards.items():
            if not guard.locked:
                continue
            paths = sorted(
                {str(getattr(route, "path", "")) for route in self.app.routes if guard in getattr(route, "guards", ())}
            )
            if not paths:
                continue  # only the detail of /healthz and /readyz, which then nobody sees
            setting = "M3B_OPERATOR_KEY" if role == "operator" else "M3B_READ_KEY or M3B_OPERATOR_KEY"
            log.warning("%s routes %s answer 401 to every request until %s is set", role, ", ".join(paths) or "-",
                        setting)  # fmt: skip
