"""HTTPS on the teacher's own network (`classpulse run --lan`): the certificate the gateway serves.
(Over 300 lines: the CA, its name constraints, the names it covers and when to issue again are
one trust decision, read and changed together.)

Browsers give the camera only to secure contexts, so a class on the school's network needs
HTTPS. Either the school's own certificate and key (``CLASSPULSE_TLS_CERT`` / ``_KEY``), used as
they are, or a local certificate authority made once under the data folder (its key mode 0600,
never served, never copied) and a server certificate signed by it for every address and host
name this machine has, issued again on start when that set changes or the certificate nears its
end. Devices trust the CA once (a managed fleet through its console, any other device by
accepting the warning): the page at the plain-HTTP help port says how (classpulse/cli/lan.py).
The CA is name-constrained to private addresses and local names (and what this machine is
called when it is made), so a stolen CA key cannot impersonate other sites to those devices.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

TLS_DIR = "tls"  # under the data folder, mode 0700
CA_CERT = "ca.pem"  # public: what devices install
CA_KEY = "ca-key.pem"  # mode 0600, never leaves this machine
SERVER_CERT = "server.pem"
SERVER_KEY = "server-key.pem"
CA_DAYS = 10 * 365
# Browsers and Apple platforms cap server certificates at 398 days; stay under.
SERVER_DAYS = 397
RENEW_BEFORE_DAYS = 30  # a server certificate closer than this to its end is issued again
CA_RENEW_BEFORE_DAYS = SERVER_DAYS + 1  # a CA that would end before its next leaf: made afresh

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# What the local CA may certify (X.509 name constraints, enforced by browsers and OpenSSL on a
# trusted root): a school installs it on its students' devices, so a stolen CA key must not
# let anyone impersonate a bank or a mail provider to them. Private, shared (CGNAT), loopback
# and link-local addresses, the private-use name suffixes, and the names and addresses this
# machine has when the CA is made (a school network on public addresses included).
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "127.0.0.0/8",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
)
PRIVATE_SUFFIXES = ("local", "localhost", "home.arpa", "internal", "lan")


@dataclass(frozen=True)
class TlsFiles:
    """What the gateway serves (``cert``/``key``) and what devices install (``ca_cert``)."""

    cert: Path
    key: Path
    ca_cert: Path | None  # the local CA's certificate; None with the school's own certificate
    names: tuple[str, ...]  # the certificate's DNS names and addresses, as text
    issued: bool = False  # a server certificate was issued on this start


# --- what this machine is called -----------------------------------------------------------


def interface_addresses() -> list[Address]:
    """Every address of this machine's interfaces that is up, loopback and link-local left out
    (a link-local IPv6 address needs a zone in a URL; no device types that)."""
    import psutil

    up = {name for name, stats in psutil.net_if_stats().items() if stats.isup}
    found: list[Address] = []
    for name, addrs in psutil.net_if_addrs().items():
        if name not in up:
            continue
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                ip = ipaddress.ip_address(a.address.split("%", 1)[0])
            except ValueError:
                continue
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip in found):
                found.append(ip)
    return found


def lan_address(addresses: Sequence[Address] | None = None) -> Address | None:
    """The address other devices on the network reach this machine at: the one the default
    route leaves from (no packet is sent), else the first private IPv4 address, else any."""
    addresses = list(interface_addresses() if addresses is None else addresses)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only the routing table is consulted
            routed = ipaddress.ip_address(s.getsockname()[0])
        if routed in addresses:
            return routed
    except OSError:
        pass  # no default route (an offline classroom network): pick from the interfaces
    v4 = [a for a in addresses if a.version == 4]
    for ip in v4 + [a for a in addresses if a.version == 6]:
        if ip.is_private:
            return ip
    return (v4 or addresses or [None])[0]


def host_names() -> list[str]:
    """This machine's host name, its fully qualified name, and ``<host>.local`` (mDNS)."""
    names: list[str] = []
    host = socket.gethostname().strip().rstrip(".").lower()
    if host:
        names.append(host)
        short = host.split(".", 1)[0]
        names.append(f"{short}.local")
        try:
            fqdn = socket.getfqdn(host).rstrip(".").lower()
        except OSError:
            fqdn = ""
        if "." in fqdn and not fqdn.endswith(".localdomain"):
            names.append(fqdn)
    return [n for i, n in enumerate(names) if valid_dns_name(n) and n not in names[:i]]


def machine_names(extra: Iterable[str] = ()) -> list[str]:
    """Every name the server certificate must cover: host names, interface addresses,
    ``localhost`` and the loopback addresses, and the extra names given (``--tls-name``)."""
    wanted = [
        *host_names(),
        "localhost",
        *(str(a) for a in interface_addresses()),
        "127.0.0.1",
        "::1",
        *extra,
    ]
    return normalise_names(wanted)


def normalise_names(names: Iterable[str]) -> list[str]:
    """Names as certificate entries: addresses in their canonical form, DNS names lowercase,
    each once, in the order given. A name that is neither is refused with ValueError."""
    out: list[str] = []
    for raw in names:
        name = raw.strip().strip("[]").rstrip(".").lower()
        if not name:
            continue
        try:
            name = str(ipaddress.ip_address(name))
        except ValueError:
            if not valid_dns_name(name):
                raise ValueError(f"not a host name or an IP address: {raw!r}") from None
        if name not in out:
            out.append(name)
    return out


def valid_dns_name(name: str) -> bool:
    labels = name.split(".")
    return len(name) <= 253 and all(
        0 < len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(c.isalnum() or c == "-" for c in label)
        and label.isascii()
        for label in labels
    )


# --- files ---------------------------------------------------------------------------------


def tls_folder(data_dir: Path) -> Path:
    """``data_dir/tls``, made private: the data folder and it 0700."""
    folder = data_dir / TLS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for path in (data_dir, folder):
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    return folder


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with ``mode`` from the start (a key is never readable by others, not
    even for a moment)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- the local certificate authority --------------------------------------------------------


def ensure_ca(
    folder: Path, now: dt.datetime | None = None, names: Sequence[str] = ()
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    """The local CA: loaded from ``folder``, or made once (and made again only when it is
    unreadable or would end before the next server certificate), constrained to private
    addresses and names plus ``names``. Returns (cert, key, made)."""
    now = now or _now()
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise ValueError("the CA key does not belong to the CA certificate")
        if cert.not_valid_after_utc - now < dt.timedelta(days=CA_RENEW_BEFORE_DAYS):
            raise ValueError("the CA ends soon")
    except FileNotFoundError:
        pass
    except ValueError as exc:
        log.warning(
            "making a new local certificate authority (%s): devices must trust it again", exc
        )
    else:
        if key_path.stat().st_mode & 0o077:
            key_path.chmod(0o600)
        return cert, key, False
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname().split(".", 1)[0][:40] or "this computer"
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ClassPulse"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"ClassPulse local CA ({host})"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(_constraints(names), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    (folder / SERVER_CERT).unlink(missing_ok=True)  # signed by the old CA: issue again
    log.info("made a local certificate authority in %s", folder)
    return cert, key, True


def _constraints(names: Sequence[str]) -> x509.NameConstraints:
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(PRIVATE_NETWORKS)
    domains = list(PRIVATE_SUFFIXES)
    for n in normalise_names(names):
        try:
            ip = ipaddress.ip_address(n)
        except ValueError:
            if not any(n == d or n.endswith("." + d) for d in domains):
                domains.append(n)
            continue
        if not any(ip in net for net in networks):
            networks.append(ipaddress.ip_network(ip))
    return x509.NameConstraints(
        permitted_subtrees=[
            *(x509.DNSName(d) for d in domains),
            *(x509.IPAddress(net) for net in networks),
        ],
        excluded_subtrees=None,
    )


def permitted(ca: x509.Certificate, name: str) -> bool:
    """Whether the CA's name constraints allow ``name`` (a CA without them allows any)."""
    try:
        nc = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return True
    subtrees = nc.permitted_subtrees or []
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        domains = [t.value for t in subtrees if isinstance(t, x509.DNSName)]
        return any(name == d or name.endswith("." + d.lstrip(".")) for d in domains)
    return any(
        isinstance(t, x509.IPAddress) and ip in t.value  # type: ignore[operator]
        for t in subtrees
    )


def fingerprint(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint as devices show it: AB:CD:…"""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


# --- the server certificate -----------------------------------------------------------------


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses of a certificate's subjectAltName, as text."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName)] + [
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    ]


def _needs_new(
    path: Path, key_path: Path, ca: x509.Certificate, names: list[str], now: dt.datetime
) -> str | None:
    """Why the server certificate at ``path`` must be issued again (None: it is fine)."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        return "none yet"
    except ValueError:
        return "unreadable"
    if key.public_key() != cert.public_key():
        return "key does not match"
    if cert.issuer != ca.subject:
        return "signed by another authority"
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # InvalidSignature: another CA of the same name (a data folder restored)
        return "signed by another authority"
    if set(certificate_names(cert)) != set(names):
        return "the addresses or names changed"
    if cert.not_valid_after_utc - now < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return "it ends soon"
    if cert.not_valid_before_utc > now:
        return "not valid yet (the clock moved back)"
    return None


def issue_server_certificate(
    folder: Path,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: Sequence[str],
    now: dt.datetime | None = None,
) -> None:
    """A server certificate (EC P-256, serverAuth, SERVER_DAYS) for ``names``, signed by the CA."""
    now = now or _now()
    names = normalise_names(names)
    if not names:
        raise ValueError("a server certificate needs at least one name")
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ClassPulse"),
                    x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64]),
                ]
            )
        )
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS) - dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(entries), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / SERVER_KEY, _key_pem(key), 0o600)
    # The certificate file carries the chain's CA after the leaf: clients that were given only
    # the CA's fingerprint can still build the chain.
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(
        serialization.Encoding.PEM
    )
    _write(folder / SERVER_CERT, chain, 0o644)


def local_certificate(
    data_dir: Path, names: Sequence[str], now: dt.datetime | None = None
) -> TlsFiles:
    """The local CA (made once) and a server certificate for ``names``, issued again when the
    names changed, it nears its end, or the CA changed."""
    now = now or _now()
    folder = tls_folder(data_dir)
    names = normalise_names(names)
    ca, ca_key, _made = ensure_ca(folder, now, names)
    outside = [n for n in names if not permitted(ca, n)]
    if outside:
        log.warning(
            "left out of the certificate, outside what this machine's CA may certify: %s "
            "(delete %s to make a new CA, which devices must trust again, or use --tls-cert)",
            ", ".join(outside),
            folder,
        )
        names = [n for n in names if n not in outside]
    reason = _needs_new(folder / SERVER_CERT, folder / SERVER_KEY, ca, names, now)
    if reason:
        issue_server_certificate(folder, ca, ca_key, names, now)
        log.info("issued a server certificate (%s) for %s", reason, ", ".join(names))
    return TlsFiles(
        cert=folder / SERVER_CERT,
        key=folder / SERVER_KEY,
        ca_cert=folder / CA_CERT,
        names=tuple(names),
        issued=reason is not None,
    )


def given_certificate(cert: Path, key: Path) -> TlsFiles:
    """The school's own certificate and key, used as they are: only checked that they load
    and belong together, never rewritten."""
    try:
        pem = cert.read_bytes()
        leaf = x509.load_pem_x509_certificates(pem)[0]
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, IndexError) as exc:
        raise ValueError(f"cannot use the TLS certificate {cert} and key {key}: {exc}") from exc
    if private.public_key() != leaf.public_key():
        raise ValueError(f"the TLS key {key} does not belong to the certificate {cert}")
    return TlsFiles(cert=cert, key=key, ca_cert=None, names=tuple(certificate_names(leaf)))


def url_host(names: Sequence[str], preferred: Address | None) -> str:
    """The host for the join links: the LAN address when the certificate covers it, else the
    certificate's first name that is not a wildcard, loopback or localhost."""
    if preferred is not None and str(preferred) in names:
        return f"[{preferred}]" if preferred.version == 6 else str(preferred)
    for n in names:
        if n.startswith("*.") or n == "localhost":
            continue
        try:
            ip = ipaddress.ip_address(n)
        except ValueError:
            return n
        if not ip.is_loopback:
            return f"[{ip}]" if ip.version == 6 else str(ip)
    return str(preferred) if preferred is not None else "localhost"
