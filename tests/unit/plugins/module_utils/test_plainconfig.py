"""module_utils/k8s/plainconfig.py: which kubeconfig contexts load without the kubernetes library,
and that anything else is left to it (load returns None)."""

import base64
import os
import stat

import pytest

from ansible_collections.strata.ops.plugins.module_utils.k8s import plainconfig

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def b64(data):
    return base64.standard_b64encode(data).decode()


def kubeconfig(cluster=None, user=None, context=None):
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "lab",
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://127.0.0.1:6443/"}}],
        "users": [{"name": "u", "user": user if user is not None else {"token": "t0k"}}],
        "contexts": [{"name": "lab", "context": context or {"cluster": "c", "user": "u"}}],
    }


def test_embedded_client_certificate_and_ca():
    doc = kubeconfig(
        cluster={"server": "https://127.0.0.1:6443", "certificate-authority-data": b64(PEM)},
        user={"client-certificate-data": b64(PEM), "client-key-data": b64(b"KEY")},
    )
    cfg = plainconfig.load(doc, "lab", "/nowhere")
    assert cfg.host == "https://127.0.0.1:6443" and cfg.verify
    assert cfg.ca_data == PEM.decode() and cfg.ca_file is None
    with open(cfg.key_file, "rb") as handle:
        assert handle.read() == b"KEY"
    assert stat.S_IMODE(os.stat(cfg.key_file).st_mode) == 0o600  # the key never lands readable
    assert cfg.auth_settings() == {}


def test_a_token_and_files_relative_to_the_kubeconfig(tmp_path):
    (tmp_path / "ca.crt").write_bytes(PEM)
    doc = kubeconfig(
        cluster={"server": "https://[::1]:6443", "certificate-authority": "ca.crt", "tls-server-name": "k"},
        user={"token": "t0k"},
    )
    cfg = plainconfig.load(doc, "lab", str(tmp_path))
    assert cfg.ca_file == str(tmp_path / "ca.crt") and cfg.server_name == "k"
    assert cfg.auth_settings()["BearerToken"]["value"] == "Bearer t0k"
    assert cfg.pool_manager().connection_pool_kw["server_hostname"] == "k"


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        (kubeconfig(user={"exec": {"command": "aws"}}), "an exec plugin"),
        (kubeconfig(user={"auth-provider": {"name": "oidc"}}), "an auth provider"),
        (kubeconfig(user={"username": "a", "password": "b"}), "basic auth"),
        (kubeconfig(user={"tokenFile": "/var/run/token"}), "a token file"),
        (kubeconfig(user={"as": "admin", "token": "t"}), "impersonation"),
        (kubeconfig(cluster={"server": "https://x", "proxy-url": "http://127.0.0.1:3128"}), "a proxy"),
        (kubeconfig(cluster={"certificate-authority-data": b64(PEM)}), "no server"),
        (kubeconfig(user={}), "no credentials"),
        (kubeconfig(user={"client-certificate-data": b64(PEM)}), "a certificate without its key"),
        (
            kubeconfig(user={"client-certificate-data": "%%%", "client-key-data": b64(b"K")}),
            "data not base64",
        ),
        (
            kubeconfig(cluster={"server": "https://x", "certificate-authority": "/no/such/ca"}),
            "a missing file",
        ),
        (kubeconfig(context={"cluster": "c", "user": "nobody"}), "a user that is not there"),
        (kubeconfig(context={"cluster": "c", "user": "u", "extensions": []}), "context extensions"),
    ],
)
def test_anything_else_is_left_to_the_library(doc, why):
    assert plainconfig.load(doc, "lab", "/nowhere") is None, why


def test_an_unknown_context_is_left_to_the_library():
    assert plainconfig.load(kubeconfig(), "other", "/nowhere") is None


def test_no_copy_of_an_embedded_key_stays_once_the_tls_context_holds_it(tmp_path):
    """A module killed later (kill -9 skips atexit) must leave no copy of the client key behind."""
    import subprocess  # noqa: PLC0415

    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=strata-test",
         "-keyout", str(key), "-out", str(cert), "-days", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    doc = kubeconfig(
        user={"client-certificate-data": b64(cert.read_bytes()), "client-key-data": b64(key.read_bytes())}
    )
    cfg = plainconfig.load(doc, "lab", "/nowhere")
    copy_dir = os.path.dirname(cfg.key_file)
    assert os.path.isfile(cfg.key_file)
    pool = cfg.pool_manager()
    assert not os.path.exists(copy_dir)
    assert pool.connection_pool_kw["ssl_context"] is not None and "cert_file" not in pool.connection_pool_kw
