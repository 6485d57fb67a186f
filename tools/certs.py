"""A throw-away CA whose server certificates look like a real CA's: 90 days, CRL and OCSP URLs (tests, bench).

trustme's certificates are valid until the year 3000 and name no revocation source, which testssl
rightly grades HIGH; the listener is what is under test, so its certificate must be an honest one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pvedx tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


class PrivateCA:
    """An ECDSA P-256 CA that issues server certificates for localhost and 127.0.0.1."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(_name("pvedx test CA")).issuer_name(_name("pvedx test CA"))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=365))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def write_ca(self, path: Path) -> Path:
        """The CA certificate as PEM at `path`."""
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def issue(self, cert_path: Path, key_path: Path, organisation: str = "pvedx tests", days: int = 90,
              more_addresses: tuple[str, ...] = ()) -> None:
        """A server certificate (+ key) for localhost, 127.0.0.1 and `more_addresses` (IP addresses or host
        names), valid for `days`."""
        key, now = ec.generate_private_key(ec.SECP256R1()), dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                             x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        for address in more_addresses:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(address)))
            except ValueError:
                sans.append(x509.DNSName(address))
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                    [x509.UniformResourceIdentifier("http://ca.invalid/pvedx.crl")], None, None, None)]), critical=False)
                .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                    AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier("http://ca.invalid/ocsp"))]),
                    critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
