"""Simulated Infor M3 MI programs behind `/m3api-rest` (v1 matrix-param API, v2, and v2 bulk).

    from simulators.ion.m3 import M3Config, M3Simulator, m3_router
    sim = M3Simulator(M3Config(seed=42))
    app.include_router(m3_router(sim), prefix=f"/{tenant}/M3/m3api-rest")

Modules: `metadata` (the MI repository: programs, transactions, fields), `data` (seeded customers/items/balances/
prices and the order store; which items are inactive is documented there), `programs` (transaction logic),
`simulator` (config, authorization, validation, dispatch), `wire` (v1/v2 JSON shapes), `router` (HTTP),
`core` (value types and the message codes chosen where the real ones are unknown).
"""

from simulators.ion.m3.core import FieldDef, MiError, MiResult
from simulators.ion.m3.router import m3_router
from simulators.ion.m3.simulator import Grant, M3Config, M3Simulator

__all__ = ["FieldDef", "Grant", "M3Config", "M3Simulator", "MiError", "MiResult", "m3_router"]
