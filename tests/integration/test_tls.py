"""TLS on the services' HTTP side, with certificates made on the fly (trustme): a client trusting the private CA
connects, one that does not is refused, a client offering only TLS 1.1 gets no connection, plain HTTP gets none."""

import os
import socket
import ssl
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from m3bridge.tansu import free_port
from simulators.processes import Captured
from simulators.stack import READ, READ_KEY, ROOT


@pytest.fixture(scope="module")
def tls_service(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[tuple[str, Path]]:
    """bod-listener serving HTTPS with a certificate for 127.0.0.1 from a private CA; (its URL, the CA file)."""
    folder = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    chain, key, ca = folder / "chain.pem", folder / "key.pem", folder / "ca.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(chain))  # the key is in it too; fine for uvicorn
    certificate.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(ca))
    port = free_port()
    env = {
        **os.environ, "M3B_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "M3B_HTTP_PORT": str(port),
        "M3B_STATE_URL": f"sqlite+aiosqlite:///{folder / 'state.db'}", "M3B_BOD_SECRET": "bod-secret-for-tls",
        "M3B_READ_KEY": READ_KEY, "M3B_HTTP_TLS_CERT_FILE": str(chain), "M3B_HTTP_TLS_KEY_FILE": str(key),
        "M3B_LOG_FORMAT": "json",
    }  # fmt: skip
    process = Captured([sys.executable, "-m", "m3bridge.cli", "serve", "bod-listener"], env=env, cwd=ROOT)
    url = f"https://127.0.0.1:{port}"
    deadline, last = time.monotonic() + 60, ""
    try:
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", verify=trusting(ca), timeout=2).status_code == 200:
                    break
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.2)
        else:
            raise AssertionError(f"bod-listener over TLS not ready: {last}\n{process.output[-3000:]}")
        yield url, ca
    finally:
        process.kill_all()


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def test_a_client_trusting_the_private_ca_is_served(tls_service: tuple[str, Path]) -> None:
    url, ca = tls_service
    answer = httpx.get(f"{url}/healthz", headers=READ, verify=trusting(ca), timeout=5)
    assert answer.status_code == 200
    assert answer.json()["service"] == "bod-listener"
    host, port = url.removeprefix("https://").split(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        trusting(ca).wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_a_client_without_the_ca_and_plain_http_are_refused(tls_service: tuple[str, Path]) -> None:
    url, _ = tls_service
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/healthz", timeout=5)
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://") + "/healthz", timeout=5)


def test_tls_1_1_is_refused(tls_service: tuple[str, Path]) -> None:
    url, ca = tls_service
    old = trusting(ca)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: exactly what is tried here
        warnings.simplefilter("ignore", DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((httpx.ConnectError, ssl.SSLError)):
        httpx.get(f"{url}/healthz", verify=old, timeout=5)
    # The same client allowed TLS 1.2 connects: the refusal was the version.
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    assert httpx.get(f"{url}/healthz", verify=old, timeout=5).status_code == 200
