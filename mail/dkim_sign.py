"""DKIM signing per sending domain (dkimpy).  Keys live in ``<state_dir>/dkim/<domain>.key``."""

from __future__ import annotations

import base64
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SIGNED_HEADERS = [b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to", b"mime-version",
                  b"content-type", b"content-transfer-encoding", b"in-reply-to", b"references"]


def create_key(folder: Path, domain: str, selector: str) -> str:
    """Write a 2048-bit RSA key for ``domain`` and return its DNS TXT record line."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = folder / f"{domain}.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return txt_record(domain, selector, key)


def txt_record(domain: str, selector: str, key: rsa.RSAPrivateKey) -> str:
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f'{selector}._domainkey.{domain}. IN TXT "v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"'


class DkimSigner:
    def __init__(self, folder: Path, selector: str):
        self.folder, self.selector = folder, selector
        self._keys: dict[str, bytes | None] = {}

    def key_for(self, domain: str) -> bytes | None:
        if domain not in self._keys:
            path = self.folder / f"{domain}.key"
            self._keys[domain] = path.read_bytes() if path.exists() else None
        return self._keys[domain]

    def sign(self, message: bytes, domain: str) -> bytes:
        """``message`` with a DKIM-Signature header prepended, or unchanged without a key."""
        return self.signature(message, domain) + message

    def signature(self, message: bytes, domain: str) -> bytes:
        """The DKIM-Signature header line(s) for ``message`` (CRLF), or b"" without a key."""
        key = self.key_for(domain)
        if key is None:
            return b""
        present = {line.split(b":", 1)[0].strip().lower() for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                   if b":" in line and not line[:1].isspace()}
        headers = [h for h in SIGNED_HEADERS if h in present]
        return bytes(dkim.sign(message, self.selector.encode(), domain.encode(), key, include_headers=headers,
                               linesep=b"\r\n"))
