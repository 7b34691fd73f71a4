"""TLS for the local Redis (``RTML_REDIS_TLS=1``): a private CA and a server certificate signed by it.

`rtml up` generates them once into ``<state_dir>/secrets/redis-tls/`` (folder 0700, keys 0600, never in the
repository): ``ca.crt`` (what every client verifies the server against: ``settings.redis_ca_file``),
``ca.key``, ``tls.crt`` / ``tls.key`` (what redis-server presents; the file names of a kubernetes.io/tls
Secret, as infra/k8s/redis/start-redis.sh reads them; its names: ``localhost``,
``127.0.0.1``, ``::1``, the host of the Redis URL and ``redis``, the compose / Kubernetes service).
The server certificate is re-issued (by the same CA) when it lacks a name or expires within
:data:`RENEW_BEFORE`; the CA is kept, so clients holding ``ca.crt`` keep working.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from infra.secrets import write_private

VALIDITY = dt.timedelta(days=825)
RENEW_BEFORE = dt.timedelta(days=30)
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1", "redis")


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> TlsFiles:
        return cls(directory / "ca.crt", directory / "ca.key", directory / "tls.crt", directory / "tls.key")

    def server_args(self) -> list[str]:
        """redis-server arguments serving TLS with these files (clients authenticate with ACL passwords,
        not certificates: ``tls-auth-clients no``)."""
        return ["--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
                "--tls-ca-cert-file", str(self.ca_cert), "--tls-auth-clients", "no"]


def _san(names: Iterable[str]):
    from cryptography import x509

    out = []
    for name in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(out)


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _pem_cert(cert) -> str:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _cert(subject: str, public_key, issuer, signer, *, ca: bool, names: Iterable[str] = ()):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer if isinstance(issuer, x509.Name) else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = (
            builder.add_extension(_san(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
                              key_encipherment=False, data_encipherment=False, key_agreement=True,
                              encipher_only=False, decipher_only=False), critical=True)
        )
    return builder.sign(signer, hashes.SHA256())


def _server_cert_current(files: TlsFiles, names: Iterable[str]) -> bool:
    """True if the server certificate exists, was signed by this CA, names every host and is not near expiry."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        if not files.key.exists():
            return False
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:  # noqa: BLE001 missing, unreadable, not signed by this CA, no names: re-issue
        return False
    have = {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)}
    wanted = {str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in names}
    return wanted <= have and cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def ensure_certificates(directory: Path, hosts: Iterable[str] = (), ca_name: str = "rtml local Redis CA") -> TlsFiles:
    """The CA and server certificate in ``directory`` (created once; the server certificate re-issued when it
    lacks one of ``hosts`` + :data:`DEFAULT_NAMES` or nears expiry). Keys are written mode 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    files = TlsFiles.in_dir(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    names = [*DEFAULT_NAMES, *hosts]
    try:
        ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        if ca_cert.not_valid_after_utc - dt.datetime.now(dt.UTC) <= RENEW_BEFORE:
            raise ValueError("CA near expiry")
    except (OSError, ValueError):
        ca_key = _key()
        ca_cert = _cert(ca_name, ca_key.public_key(), ca_name, ca_key, ca=True)
        write_private(files.ca_key, _pem_key(ca_key))
        write_private(files.ca_cert, _pem_cert(ca_cert))
        files.cert.unlink(missing_ok=True)
    if not _server_cert_current(files, names):
        key = _key()
        cert = _cert("rtml redis", key.public_key(), ca_cert.subject, ca_key,
                     ca=False, names=names)
        write_private(files.key, _pem_key(key))
        write_private(files.cert, _pem_cert(cert))
    for path in (files.ca_key, files.key):
        os.chmod(path, 0o600)
    return files


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.redis_tls OUT_DIR [HOST ...]``: a CA and server certificate for a deployed Redis
    (e.g. the Kubernetes Secret of docs/operators.md, "Redis TLS"); prints the directory."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        print("usage: python -m infra.redis_tls OUT_DIR [HOST ...]", file=sys.stderr)
        return 2
    files = ensure_certificates(Path(args[0]), args[1:])
    print(files.cert.parent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
