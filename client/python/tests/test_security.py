"""Bearer token and TLS against servers started with --auth_token and --tls_cert/--tls_key."""

import subprocess

import grpc
import numpy as np
import pytest

import tpserve
from conftest import ServerProcess

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("auth")
    process = ServerProcess(base / "models", base, [f"--auth_token={TOKEN}"]).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("tls")
    cert, key = base / "cert.pem", base / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    process = ServerProcess(base / "models", base,
                            [f"--tls_cert={cert}", f"--tls_key={key}", f"--auth_token={TOKEN}"]).start()
    process.cert = cert
    yield process
    process.stop()


def test_calls_without_the_token_or_with_a_wrong_one_are_unauthenticated(auth_server):
    for token in (None, "wrong"):
        with tpserve.Client(auth_server.target, token=token) as client:
            with pytest.raises(tpserve.Unauthenticated) as error:
                client.list_models()
            assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(tpserve.Unauthenticated):
                list(client.stream([tpserve.StreamEcho(b"x")]))


def test_the_right_token_works_for_every_kind_of_call(auth_server):
    with tpserve.Client(auth_server.target, token=TOKEN) as client:
        info = client.create_model("authed", "2x0e", "2x0e", "2x0e", seed=1)  # client stream
        assert [m.name for m in client.list_models()] == ["authed"]            # unary
        assert client.download_weights("authed").shape == (info.weight_numel,)  # server stream
        x = np.ones((1, 2), np.float32)
        assert next(client.stream_forward("authed", [(x, x)])).shape == (1, 2)  # bidirectional


def test_tls_with_the_servers_certificate_as_root(tls_server):
    with tpserve.Client(f"localhost:{tls_server.port}", root_certificates=str(tls_server.cert),
                        token=TOKEN) as client:
        assert client.echo(b"over tls") == b"over tls"
    pem = tls_server.cert.read_bytes()
    # The certificate names localhost and 127.0.0.1; another name is refused unless overridden.
    with tpserve.Client(f"127.0.0.1:{tls_server.port}", root_certificates=pem, token=TOKEN,
                        tls_server_name="localhost") as client:
        assert client.list_models() == []


def test_tls_refuses_a_server_it_cannot_verify_and_plaintext_gets_nowhere(tls_server):
    # System roots do not know the self-signed certificate.
    with tpserve.Client(f"localhost:{tls_server.port}", tls=True, token=TOKEN, retry=tpserve.NO_RETRIES) as client:
        with pytest.raises(tpserve.Unavailable):
            client.echo(b"x", timeout=5)
    with tpserve.Client(tls_server.target, token=TOKEN, retry=tpserve.NO_RETRIES) as plaintext:
        with pytest.raises(tpserve.Unavailable):
            plaintext.echo(b"x", timeout=5)
