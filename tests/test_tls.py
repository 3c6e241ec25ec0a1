"""classpulse/tls.py: the local certificate authority and the server certificate of `--lan`,
and the school's own certificate used as it is. Real keys, real certificates, real TLS
handshakes (Python's ssl module, OpenSSL) against them."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from classpulse import tls

NAMES = [
    "laptop",
    "laptop.local",
    "localhost",
    "192.168.1.20",
    "127.0.0.1",
    "::1",
    "classroom.test",
]


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_certificate_covers_every_name_and_address(tmp_path: Path) -> None:
    files = tls.local_certificate(tmp_path, NAMES)
    leaf = _load(files.cert)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {
        "laptop",
        "laptop.local",
        "localhost",
        "classroom.test",
    }
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("192.168.1.20"),
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert files.names == tuple(tls.normalise_names(NAMES))
    # A server certificate browsers accept: serverAuth, not a CA, at most 397 days.
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(days=397)
    ca = _load(files.ca_cert)  # type: ignore[arg-type]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > dt.timedelta(days=5 * 365)
    leaf.verify_directly_issued_by(ca)


def test_ca_key_is_private_and_never_in_what_is_served(tmp_path: Path) -> None:
    files = tls.local_certificate(tmp_path / "data", NAMES)
    folder = tmp_path / "data" / tls.TLS_DIR
    assert _mode(folder / tls.CA_KEY) == 0o600
    assert _mode(files.key) == 0o600
    assert _mode(folder) == 0o700 and _mode(tmp_path / "data") == 0o700
    assert b"PRIVATE KEY" not in files.ca_cert.read_bytes()  # type: ignore[union-attr]
    assert b"PRIVATE KEY" not in files.cert.read_bytes()
    # A key loosened by hand is tightened again on the next start.
    (folder / tls.CA_KEY).chmod(0o644)
    tls.local_certificate(tmp_path / "data", NAMES)
    assert _mode(folder / tls.CA_KEY) == 0o600


def test_same_names_keep_the_certificate_changed_address_gets_a_new_one(tmp_path: Path) -> None:
    first = tls.local_certificate(tmp_path, NAMES)
    assert first.issued
    serial = _load(first.cert).serial_number
    ca_serial = _load(first.ca_cert).serial_number  # type: ignore[arg-type]

    again = tls.local_certificate(tmp_path, list(reversed(NAMES)))  # same set, other order
    assert not again.issued and _load(again.cert).serial_number == serial

    moved = [n if n != "192.168.1.20" else "10.0.0.7" for n in NAMES]  # the laptop moved rooms
    renewed = tls.local_certificate(tmp_path, moved)
    assert renewed.issued
    leaf = _load(renewed.cert)
    assert leaf.serial_number != serial
    assert "10.0.0.7" in tls.certificate_names(leaf)
    assert "192.168.1.20" not in tls.certificate_names(leaf)
    # The authority stays: devices that trust it need nothing new.
    assert _load(renewed.ca_cert).serial_number == ca_serial  # type: ignore[arg-type]
    leaf.verify_directly_issued_by(_load(renewed.ca_cert))  # type: ignore[arg-type]


def test_certificate_near_its_end_is_renewed_on_start(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    first = tls.local_certificate(tmp_path, NAMES, now=now)
    serial = _load(first.cert).serial_number
    later = now + dt.timedelta(days=tls.SERVER_DAYS - tls.RENEW_BEFORE_DAYS + 1)
    renewed = tls.local_certificate(tmp_path, NAMES, now=later)
    assert renewed.issued and _load(renewed.cert).serial_number != serial


def test_tls_handshake_verifies_against_the_ca_for_each_name(tmp_path: Path) -> None:
    """OpenSSL accepts the chain for a name and an address in the certificate, and refuses a
    name that is not in it."""
    files = tls.local_certificate(tmp_path, NAMES)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert, files.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(3):
            conn, _addr = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as s:
                    s.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = ssl.create_default_context(cafile=str(files.ca_cert))
    for name in ("classroom.test", "127.0.0.1"):
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client.wrap_socket(raw, server_hostname=name) as s,
        ):
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            s.sendall(b"x")
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection(("127.0.0.1", port)) as raw,
    ):
        client.wrap_socket(raw, server_hostname="elsewhere.test")
    thread.join(5)
    listener.close()


def _school_certificate(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A certificate the school already has (here self-made, for pulse.school.test)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pulse.school.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("pulse.school.test")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = tmp_path / "school.pem", tmp_path / "school-key.pem"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o640)
    return cert_path, key_path, pem


def test_school_certificate_is_used_as_it_is(tmp_path: Path) -> None:
    cert_path, key_path, pem = _school_certificate(tmp_path)
    key_bytes = key_path.read_bytes()
    files = tls.given_certificate(cert_path, key_path)
    assert (files.cert, files.key, files.ca_cert) == (cert_path, key_path, None)
    assert files.names == ("pulse.school.test",)
    # Untouched: same bytes, same mode; no CA made anywhere.
    assert cert_path.read_bytes() == pem and key_path.read_bytes() == key_bytes
    assert _mode(key_path) == 0o640
    assert not (tmp_path / tls.TLS_DIR).exists()
    assert tls.url_host(files.names, ipaddress.ip_address("10.0.0.7")) == "pulse.school.test"


def test_school_certificate_with_another_key_is_refused(tmp_path: Path) -> None:
    cert_path, _key_path, _pem = _school_certificate(tmp_path)
    other = tmp_path / "other-key.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="does not belong"):
        tls.given_certificate(cert_path, other)


def test_machine_names_cover_this_machine(tmp_path: Path) -> None:
    names = tls.machine_names(["classroom.test"])
    host = socket.gethostname().lower()
    assert host in names and f"{host.split('.')[0]}.local" in names
    assert {"localhost", "127.0.0.1", "::1", "classroom.test"} <= set(names)
    for address in tls.interface_addresses():
        assert str(address) in names
        assert not address.is_loopback
    lan = tls.lan_address()
    assert lan is None or str(lan) in names


def test_names_are_checked() -> None:
    assert tls.normalise_names(["Laptop.Local.", "[::1]", " 10.0.0.1 ", "10.0.0.1"]) == [
        "laptop.local",
        "::1",
        "10.0.0.1",
    ]
    with pytest.raises(ValueError):
        tls.normalise_names(["not a name"])
    assert tls.url_host(["localhost", "127.0.0.1", "fd00::5"], None) == "[fd00::5]"
    assert tls.url_host(NAMES, ipaddress.ip_address("192.168.1.20")) == "192.168.1.20"


def test_ca_may_certify_only_private_addresses_and_names(tmp_path: Path) -> None:
    """A stolen CA key must not let anyone impersonate a bank to the devices that trust it:
    the CA is name-constrained, and OpenSSL refuses a certificate it signed for another name."""
    files = tls.local_certificate(tmp_path, [*NAMES, "203.0.113.9"])
    ca = _load(files.ca_cert)  # type: ignore[arg-type]
    nc = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    for name in (*NAMES, "203.0.113.9", "10.1.2.3", "fd00::1", "room12.local", "x.internal"):
        assert tls.permitted(ca, name), name
    for name in ("bank.example", "www.google.com", "8.8.8.8", "2001:db8::1", "testlaptop"):
        assert not tls.permitted(ca, name), name

    # Signed by the CA's key all the same (as a thief would): verification fails.
    folder = tmp_path / "stolen"
    folder.mkdir()
    key = serialization.load_pem_private_key(
        (tmp_path / tls.TLS_DIR / tls.CA_KEY).read_bytes(), password=None
    )
    tls.issue_server_certificate(folder, ca, key, ["bank.example"])  # type: ignore[arg-type]
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(folder / tls.SERVER_CERT, folder / tls.SERVER_KEY)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _addr = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = ssl.create_default_context(cafile=str(files.ca_cert))
    with (
        pytest.raises(ssl.SSLCertVerificationError, match="constraint|subtree"),
        socket.create_connection(listener.getsockname()) as raw,
    ):
        client.wrap_socket(raw, server_hostname="bank.example")
    thread.join(5)
    listener.close()


def test_a_later_public_address_outside_the_ca_is_left_out(tmp_path: Path) -> None:
    tls.local_certificate(tmp_path, NAMES)
    files = tls.local_certificate(tmp_path, [*NAMES, "198.51.100.4", "newname"])
    assert "198.51.100.4" not in files.names and "newname" not in files.names
    assert set(files.names) == set(tls.normalise_names(NAMES))
    assert not files.issued  # nothing the CA may certify changed
