"""Who issued a certificate, read from its DER form (to name the issuer when the hub is not trusted)."""

from __future__ import annotations

import ssl

import pytest
import trustme

from jupyter_dev_proxy.certificates import certificate_issuer


def _der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def test_the_issuer_of_a_certificate_is_read_from_its_der_form() -> None:
    ca = trustme.CA(organization_name="Example Cluster", organization_unit_name="Kubernetes CA")
    assert certificate_issuer(_der(ca.issue_cert("jupyterhub"))) == "O=Example Cluster, OU=Kubernetes CA"


def test_the_issuer_of_an_intermediate_signed_certificate_is_the_intermediate() -> None:
    root = trustme.CA(organization_name="Root")
    intermediate = root.create_child_ca()
    issuer = certificate_issuer(_der(intermediate.issue_cert("jupyterhub")))
    assert issuer is not None and issuer != certificate_issuer(_der(root.issue_cert("jupyterhub")))


@pytest.mark.parametrize("garbage", [b"", b"\x30\x03\x02\x01\x01", b"not a certificate"])
def test_an_unreadable_certificate_has_no_issuer(garbage: bytes) -> None:
    assert certificate_issuer(garbage) is None
