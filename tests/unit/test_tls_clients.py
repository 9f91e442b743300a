"""The bridge's TLS clients with certificates made on the fly (trustme): Kafka over SSL with a private CA and a
client certificate (against a TLS server that requires one: the embedded broker has no TLS listener, so the client
configuration is what is tested here), and outgoing HTTPS trusting a private CA (M3B_HTTP_CA_FILE)."""

import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from shared.platform.kafka import kafka_ssl_context
from shared.platform.runtime import outgoing_tls
from shared.platform.settings import BridgeSettings

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def files(folder: Path, authority: trustme.CA) -> tuple[Path, Path, Path]:
    """The CA's PEM, a client certificate and its key."""
    ca, cert, key = folder / "ca.pem", folder / "client.pem", folder / "client.key"
    authority.cert_pem.write_to_path(str(ca))
    client = authority.issue_cert("m3bridge-order-writer")
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    return ca, cert, key


@pytest.fixture(scope="module")
def mutual_tls_server(authority: trustme.CA) -> Iterator[int]:
    """A TLS server that requires a client certificate from the private CA (as a broker with ssl.client.auth)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    authority.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(b"hello")
            except (ssl.SSLError, OSError):
                connection.close()

    threading.Thread(target=serve, daemon=True).start()
    yield port
    listener.close()


def greeting(context: ssl.SSLContext, port: int) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.recv(5)


def test_kafka_over_ssl_trusts_the_private_ca_and_presents_the_client_certificate(
    tmp_path: Path, authority: trustme.CA, mutual_tls_server: int
) -> None:
    ca, cert, key = files(tmp_path, authority)
    settings = BridgeSettings(kafka_security_protocol="SSL", kafka_ssl_ca_file=ca, kafka_ssl_cert_file=cert,
                              kafka_ssl_key_file=key)  # fmt: skip
    context = kafka_ssl_context(settings)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert greeting(context, mutual_tls_server) == b"hello"
    # Without the client certificate the server ends the handshake; without the CA the client refuses the server.
    anonymous = kafka_ssl_context(BridgeSettings(kafka_security_protocol="SSL", kafka_ssl_ca_file=ca))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        assert greeting(anonymous, mutual_tls_server) == b"hello"
    with pytest.raises(ssl.SSLCertVerificationError):
        greeting(kafka_ssl_context(BridgeSettings(kafka_security_protocol="SSL")), mutual_tls_server)


def test_kafka_tls_files_are_refused_with_a_protocol_that_does_not_use_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="need M3B_KAFKA_SECURITY_PROTOCOL SSL or SASL_SSL"):
        BridgeSettings(kafka_ssl_ca_file=tmp_path / "ca.pem")
    with pytest.raises(ValueError, match="go together"):
        BridgeSettings(kafka_security_protocol="SSL", kafka_ssl_cert_file=tmp_path / "client.pem")


async def test_outgoing_https_trusts_the_private_ca_when_told(tmp_path: Path, authority: trustme.CA) -> None:
    ca, _, _ = files(tmp_path, authority)
    server = http.server.HTTPServer(("127.0.0.1", 0), Hello)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/"
    try:
        async with httpx.AsyncClient(verify=outgoing_tls(BridgeSettings(http_ca_file=ca))) as trusting:
            assert (await trusting.get(url)).text == "hello"
        assert outgoing_tls(BridgeSettings()) is True
        async with httpx.AsyncClient(verify=outgoing_tls(BridgeSettings())) as default:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await default.get(url)
    finally:
        server.shutdown()


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *_: object) -> None:
        """Quiet."""
