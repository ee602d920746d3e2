"""The initiator's SecurityCredential (Transaction Status, Pull's sibling APIs, Reversal): the
initiator password RSA-encrypted with Safaricom's public certificate, PKCS#1 v1.5 padding,
base64 (../shared/reference/daraja.md, "SecurityCredential"). Sandbox and production each have
their own certificate, published on the Daraja portal; ``[mpesa] certificate`` names the file."""
from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class CertificateError(ValueError):
    """The certificate file cannot be read as an X.509 certificate with an RSA key."""


def load_certificate(data: bytes) -> x509.Certificate:
    """A PEM or DER certificate; raises :class:`CertificateError`."""
    for loader in (x509.load_pem_x509_certificate, x509.load_der_x509_certificate):
        try:
            cert = loader(data)
        except ValueError:
            continue
        if not isinstance(cert.public_key(), rsa.RSAPublicKey):
            raise CertificateError("its key is not RSA")
        return cert
    raise CertificateError("not a PEM or DER X.509 certificate")


def security_credential(password: str, cert: x509.Certificate) -> str:
    """``password`` as Daraja's SecurityCredential for the holder of ``cert``."""
    return base64.b64encode(cert.public_key().encrypt(password.encode(), padding.PKCS1v15())).decode()
