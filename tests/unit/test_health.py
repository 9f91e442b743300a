import asyncio

from shared.platform.health import Health


async def test_ready_only_when_every_check_passes() -> None:
    health = Health("svc")

    async def ok() -> None:
        return None

    async def down() -> str:
        return "broker not reachable"

    health.add_check("a", ok)
    assert await health.readiness() == (True, {"a": "ok"})
    health.add_check("b", down)
    assert await health.readiness() == (False, {"a": "ok", "b": "broker not reachable"})


async def test_a_hanging_or_crashing_check_is_a_reading_not_a_crash() -> None:
    health = Health("svc")

    async def hangs() -> None:
        await asyncio.sleep(10)

    async def crashes() -> None:
        raise ConnectionError("refused")

    health.add_check("slow", hangs)
    health.add_check("boom", crashes)
    ready, checks = await health.readiness(timeout_s=0.05)
    assert not ready
    assert checks == {"slow": "check timed out after 0.05s", "boom": "ConnectionError: refused"}


def test_live_details_are_read_when_asked() -> None:
    health = Health("svc")
    figures = {"n": 1}
    health.set_detail("live", lambda: dict(figures))
    assert health.liveness()["live"] == {"n": 1}
    figures["n"] = 2
    assert health.liveness()["live"] == {"n": 2}


async def test_not_ready_while_stopping() -> None:
    health = Health("svc")
    health.stopping = True
    ready, checks = await health.readiness()
    assert not ready
    assert checks["shutdown"] == "draining in-flight work"
