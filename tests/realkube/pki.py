"""The certificates, keys and tokens a throwaway control plane needs, made with cryptography.

One CA signs every serving certificate and every client certificate; the API
server trusts client certificates from it (``--client-ca-file``) and maps a
certificate's CN to the user and its O entries to groups, as the Kubernetes
docs describe ("X509 client certificates", Authenticating). Service-account
tokens are signed with their own key pair, as ``--service-account-*`` expect.
EC P-256 keys throughout: cheap to generate, accepted by every component.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True, slots=True)
class KeyPair:
    cert: Path
    key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.write_bytes(data)


def _new_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"alphaswarm-test-{name}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


class Pki:
    """A CA named ``name``; writes everything into ``directory`` (owner-only keys).

    With ``issuer`` (the paths of an existing CA's certificate and key: a shared
    control plane's, tests/realkube/shared.py) it issues from that CA instead of a new one.
    """

    def __init__(
        self, directory: Path, name: str = "ca", *, issuer: tuple[Path, Path] | None = None
    ) -> None:
        self.directory = directory
        if issuer is None:
            self._ca_key, self._ca_cert = _new_ca(name)
            self.ca_cert, self.ca_key = directory / f"{name}.crt", directory / f"{name}.key"
            self.ca_cert.write_bytes(self._ca_cert.public_bytes(serialization.Encoding.PEM))
            _write_private(self.ca_key, _key_pem(self._ca_key))
        else:
            self.ca_cert, self.ca_key = issuer
            self._ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise TypeError(f"{self.ca_key} is not an EC private key")
            self._ca_key = key
        self.ca_pem = self._ca_cert.public_bytes(serialization.Encoding.PEM)

    def _issue(
        self,
        stem: str,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        dns_names: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        server: bool = False,
    ) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            alt_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
            alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        pair = KeyPair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(pair.key, _key_pem(key))
        return pair

    def serving(self, stem: str, *, dns_names: tuple[str, ...], ips: tuple[str, ...]) -> KeyPair:
        return self._issue(stem, dns_names[0], dns_names=dns_names, ips=ips, server=True)

    def loopback_serving(self, name: str, *dns_names: str) -> KeyPair:
        """A serving certificate for 127.0.0.1 and localhost (and ``dns_names``)."""
        return self.serving(
            f"{name}-serving", dns_names=("localhost", *dns_names), ips=("127.0.0.1",)
        )

    def client(self, stem: str, user: str, *groups: str) -> KeyPair:
        return self._issue(stem, user, organizations=groups)

    def service_account_keys(self) -> KeyPair:
        """The token signing key (``key``) and its public half (``cert``, a PEM public key)."""
        key = ec.generate_private_key(ec.SECP256R1())
        pair = KeyPair(self.directory / "sa.pub", self.directory / "sa.key")
        pair.cert.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        _write_private(pair.key, _key_pem(key))
        return pair

    def token_file(self, users: dict[str, tuple[str, ...]]) -> tuple[Path, dict[str, str]]:
        """A ``--token-auth-file`` with a random bearer token per user: (path, user -> token)."""
        tokens = {user: secrets.token_urlsafe(32) for user in users}
        path = self.directory / "tokens.csv"
        # token,user,uid,"group1,group2" (Authenticating: Static Token File)
        lines = [f'{tokens[u]},{u},{u},"{",".join(groups)}"' for u, groups in users.items()]
        _write_private(path, ("\n".join(lines) + "\n").encode())
        return path, tokens
