"""Transport and scope on a real server process: HTTPS checked by a real client against a test CA made here with
``cryptography``; refusals of a key that does not fit its certificate and of plain HTTP off loopback; tokens
scoped to models (403 elsewhere, a repository index without the others)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl

import httpx
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from IPython.core.error import UsageError
from test_serve_support import aios_home, publish_tiny, running_server

from aios_lab.errors import InvalidInput
from aios_lab.serve import create_token, endpoints, serve, tokens
from aios_lab.verbs import run

pytestmark = pytest.mark.timeout(240)

X = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32).tolist()
BODY = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": X}]}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(folder):
    """A test CA and a server certificate it signs for 127.0.0.1 and localhost; returns the paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("aios test CA"))
        .issuer_name(_name("aios test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key", "other_key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(_pem_key(key))
    paths["other_key"].write_bytes(_pem_key(ec.generate_private_key(ec.SECP256R1())))
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def srv(tmp_path_factory, pki):
    home = tmp_path_factory.mktemp("tls")
    with aios_home(home):
        publish_tiny("digits", seed=0)
        publish_tiny("other", seed=1)
    with running_server(home, tls_cert=pki["cert"], tls_key=pki["key"], poll_interval_s=0) as s:
        yield s


@pytest.fixture
def home(srv, monkeypatch):
    monkeypatch.setenv("AIOS_HOME", str(srv.home))
    return srv.home


def client(srv, pki, token: str | None = None) -> httpx.Client:
    """A real HTTPS client that trusts only the test CA (and checks the host name)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=srv.url, verify=ssl.create_default_context(cafile=pki["ca"]), headers=headers)


def test_https_verified_against_the_test_ca(srv, home, pki):
    assert srv.url.startswith("https://127.0.0.1:")
    with client(srv, pki, srv.infer) as c:
        assert c.get("/v2/health/ready").json() == {"ready": True}
        r = c.post("/v2/models/digits/infer", json=BODY)
        assert r.status_code == 200 and r.json()["model_name"] == "digits"
    with httpx.Client(base_url=srv.url) as c, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        c.get("/v2/health/ready")  # the system's CAs do not know the test CA
    with httpx.Client(base_url=srv.url.replace("https://", "http://")) as c, pytest.raises(httpx.HTTPError):
        c.get("/v2/health/ready")  # no plain HTTP on the TLS port
    ep = next(e for e in endpoints() if e.url == srv.url)
    assert ep.status["tls_cert"] == pki["cert"] and ep.problems() == []
    assert serve(port=ep.port, tls_cert=pki["cert"], tls_key=pki["key"]).pid == ep.pid  # found, not started again


def test_scoped_tokens_get_403_on_other_models_and_a_filtered_index(srv, home, pki):
    scoped = create_token("infer", models=["digits"])
    with client(srv, pki, scoped) as c:
        assert c.post("/v2/models/digits/infer", json=BODY).status_code == 200
        assert c.get("/v2/models/digits").json()["name"] == "digits"
        for r in (c.post("/v2/models/other/infer", json=BODY), c.get("/v2/models/other"), c.get("/metrics")):
            assert r.status_code == 403 and "scoped to digits" in r.json()["error"], r.text
        assert c.get("/v2/models/nosuch").status_code == 403  # other names are not even looked up
    scoped_admin = create_token("admin", models="digits")
    with client(srv, pki, scoped_admin) as c:
        names = {r["name"] for r in c.post("/v2/repository/index").json()}
        assert names == {"digits"}
        assert c.post("/v2/repository/models/other/unload").status_code == 403
    with client(srv, pki, srv.admin) as c:
        assert {r["name"] for r in c.post("/v2/repository/index").json()} == {"digits", "other"}
        assert c.post("/v2/models/other/infer", json=BODY).status_code == 200
    # the verb: a scoped token, listed with its models
    token = str(run("token create --role infer --models digits,lm --label scorer")).strip()
    assert token.startswith("aios_")
    listed = {t.label: t for t in tokens()}
    assert listed["scorer"].models == ("digits", "lm") and listed["scorer"].to_json()["models"] == ["digits", "lm"]
    assert "digits, lm" in str(run("token list"))
    with client(srv, pki, token) as c:
        assert c.post("/v2/models/digits/infer", json=BODY).status_code == 200
        assert c.post("/v2/models/other/infer", json=BODY).status_code == 403


def test_bad_transport_and_scope_input_is_one_line_and_starts_nothing(home, pki):
    before = len(endpoints())
    cases = [
        (dict(tls_cert=pki["cert"], tls_key=pki["other_key"]), "does not match the certificate"),
        (dict(tls_cert=pki["cert"]), "needs both --tls-cert"),
        (dict(tls_cert=pki["cert"], tls_key=pki["cert"] + ".missing"), "no such file"),
        (dict(tls_cert=pki["ca"], tls_key=pki["cert"]), "cannot use"),
        (dict(host="0.0.0.0"), "--insecure"),
    ]
    for kw, match in cases:
        with pytest.raises(InvalidInput) as e:
            serve(port=1, **kw)
        assert match in str(e.value) and "\n" not in str(e.value), (kw, str(e.value))
    with pytest.raises(UsageError, match="does not match the certificate"):
        run(f"serve --port 1 --tls-cert {pki['cert']} --tls-key {pki['other_key']}")
    with pytest.raises(UsageError, match="--insecure"):
        run("serve --port 1 --host 10.1.2.3")
    assert len(endpoints()) == before
    n = len(tokens())
    for models, match in (("", "is empty"), ("digits,Bad Name", "is not a model name"), ([3], "model names")):
        with pytest.raises(InvalidInput, match=match):
            create_token("infer", models=models)
    with pytest.raises(UsageError, match="is empty"):
        run("token create --models ,")
    assert len(tokens()) == n
