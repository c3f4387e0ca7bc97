"""TLS material: the configured pair, or a self-signed one generated into the state dir."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lienthong.config import Config

log = logging.getLogger("lienthong.tls")


def certificate_paths(config: Config) -> tuple[Path, Path]:
    """The cert/key pair to use, generating a self-signed one when none is configured."""
    if config.tls.cert:
        return config.resolve_path(config.tls.cert), config.resolve_path(config.tls.key)
    cert = config.state_path / "tls" / "selfsigned.crt"
    key = config.state_path / "tls" / "selfsigned.key"
    if not (cert.exists() and key.exists()):
        generate_self_signed(cert, key, config.tls.generated_names)
        log.info("generated self-signed certificate", extra={"cert": str(cert)})
    return cert, key


def generate_self_signed(cert_path: Path, key_path: Path, names: list[str], days: int = 825) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "localhost"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Liên thông (self-signed)")])
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def server_context(config: Config) -> ssl.SSLContext:
    cert, key = certificate_paths(config)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx
