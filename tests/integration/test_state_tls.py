"""The state store over TLS with a private CA: a PostgreSQL of its own (initdb, as the `postgres` user) that accepts
only TLS connections with a certificate from a trustme CA. The bridge reaches it with `?ssl=verify-full` in
M3B_STATE_URL and the CA in PGSSLROOTCERT (the libpq variable asyncpg honours): migrations run and the store
answers; without the CA the server is not trusted; without TLS the server refuses the connection."""

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from m3bridge.tansu import free_port
from shared.platform.state import db

BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


def as_postgres(*command: str) -> subprocess.CompletedProcess[str]:
    runner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*runner, *command], capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[tuple[int, Path]]:
    """(its port, the CA file)."""
    assert BIN is not None, "PostgreSQL's server binaries are missing (Debian: postgresql)"
    assert (BIN / "initdb").exists(), f"no initdb in {BIN}"
    # Not under pytest's own folder: the `postgres` user cannot enter root's.
    folder = Path(tempfile.mkdtemp(prefix="m3b-pg-tls-"))
    data = folder / "data"
    data.mkdir()
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    ca = folder / "ca.pem"
    authority.cert_pem.write_to_path(str(ca))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(data, "postgres")
    initialised = as_postgres(str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    assert initialised.returncode == 0, initialised.stderr
    certificate.cert_chain_pems[0].write_to_path(str(data / "server.crt"))
    certificate.private_key_pem.write_to_path(str(data / "server.key"))
    for name in ("server.crt", "server.key"):
        if os.geteuid() == 0:
            shutil.chown(data / name, "postgres")
        (data / name).chmod(0o600)
    port = free_port()
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{folder}'\n"
                   "ssl = on\nssl_min_protocol_version = 'TLSv1.2'\n")  # fmt: skip
    (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n")
    if os.geteuid() == 0:
        shutil.chown(data / "pg_hba.conf", "postgres")
    started = as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "start")
    assert started.returncode == 0, started.stderr + (folder / "log").read_text(errors="replace")
    try:
        yield port, ca
    finally:
        as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def reach(url: str) -> str | None:
    async def go() -> str | None:
        revision = await db.migrate(url)
        engine = db.create_engine(url)
        try:
            await db.ping(engine)
        finally:
            await engine.dispose()
        return revision

    return asyncio.run(go())


def test_the_state_store_over_tls_with_a_private_ca(
    tls_postgres: tuple[int, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port, ca = tls_postgres
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres?ssl=verify-full"
    monkeypatch.setenv("PGSSLROOTCERT", str(ca))
    assert reach(url) == db.newest_revision()
    # Another CA does not vouch for the server.
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    monkeypatch.setenv("PGSSLROOTCERT", str(stranger))
    with pytest.raises(Exception, match="certificate verify failed"):
        reach(url)
    # Without TLS the server refuses (pg_hba: hostnossl reject).
    monkeypatch.delenv("PGSSLROOTCERT")
    with pytest.raises(Exception, match=r"pg_hba\.conf rejects connection"):
        reach(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres?ssl=disable")
