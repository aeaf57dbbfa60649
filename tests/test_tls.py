import ipaddress
import os
import pathlib
import ssl
import stat
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from txxapi import tls

HOST = "xcp-host-1.example"
UUID = "3f4f4e8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """One generated key/certificate pair for the module: RSA generation
    is the slow part."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "server.crt"), str(d / "server.key")
    tls.ensure_self_signed(cert, key, HOST, UUID, ips=["192.0.2.5"])
    return cert, key


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    start = data.index(b"-----BEGIN CERTIFICATE-----")
    return x509.load_pem_x509_certificate(data[start:])


def test_generated_certificate(pair):
    cert_path, key_path = pair
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    cert = load(cert_path)
    assert cert.subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)[0].value == HOST
    assert cert.subject.get_attributes_for_oid(
        NameOID.SERIAL_NUMBER)[0].value == UUID
    assert cert.issuer == cert.subject
    assert cert.public_key().key_size == 2048
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert life.days >= 3649
    san = cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [HOST]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("192.0.2.5", "127.0.0.1", "::1")}
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.value.ca is False
    # No temporary files left behind.
    assert sorted(os.listdir(os.path.dirname(cert_path))) == [
        "server.crt", "server.key"]


def test_generated_only_once(pair):
    cert_path, key_path = pair

    def state():
        return [(os.stat(p).st_mtime_ns, pathlib.Path(p).read_bytes())
                for p in (cert_path, key_path)]
    before = state()
    tls.ensure_self_signed(cert_path, key_path, "other-name")
    assert state() == before


def test_single_file_like_xapi_pem(tmp_path):
    pem = str(tmp_path / "sub" / "xapi-ssl.pem")
    tls.ensure_self_signed(pem, None, "10.0.0.1")
    assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600
    with open(pem, "rb") as f:
        data = f.read()
    assert data.index(b"PRIVATE KEY-----") < data.index(
        b"BEGIN CERTIFICATE")
    san = load(pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    # An address given as the hostname is an IP entry, not a DNS name.
    assert san.get_values_for_type(x509.DNSName) == []
    assert ipaddress.ip_address("10.0.0.1") in san.get_values_for_type(
        x509.IPAddress)
    mtime = os.stat(pem).st_mtime_ns
    tls.ensure_self_signed(pem, None, "10.0.0.1")
    assert os.stat(pem).st_mtime_ns == mtime
    # Usable as is.
    tls.server_context_factory(pem).getContext()
    tls.server_context_factory(pem, None)


def test_key_in_cert_file_and_chain(pair, tmp_path):
    cert_path, key_path = pair
    # key + leaf + (a stand-in for) an intermediate, in one file.
    combined = tmp_path / "combined.pem"
    with open(key_path, "rb") as k, open(cert_path, "rb") as c:
        leaf = c.read()
        combined.write_bytes(k.read() + leaf + leaf)
    options = tls.server_context_factory(str(combined))
    assert options.extraCertChain
    tls.server_context_factory(cert_path, key_path)


def test_mismatched_or_missing_files(pair, tmp_path):
    cert_path, key_path = pair
    other = str(tmp_path / "other.pem")
    tls.ensure_self_signed(other, None, "other")
    with pytest.raises(Exception):
        tls.server_context_factory(cert_path, other)
    with pytest.raises(ValueError):
        tls.server_context_factory(key_path, key_path)
    with pytest.raises(ValueError):
        tls.server_context_factory(cert_path, cert_path)
    with pytest.raises(OSError):
        tls.server_context_factory(str(tmp_path / "missing.pem"))


def test_fingerprint(pair):
    cert_path, _ = pair
    fp = tls.fingerprint_sha256(cert_path)
    expected = load(cert_path).fingerprint(hashes.SHA256())
    assert fp == ":".join("%02X" % b for b in expected)
    assert len(fp) == 32 * 3 - 1


def test_context_options(pair):
    context = tls.server_context_factory(*pair).getContext()
    options = context.set_options(0)  # returns the options in force
    for flag in (SSL.OP_NO_SSLv3, SSL.OP_NO_TLSv1, SSL.OP_NO_TLSv1_1,
                 SSL.OP_NO_COMPRESSION, SSL.OP_NO_RENEGOTIATION):
        assert options & flag
    assert not options & SSL.OP_NO_TLSv1_2


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


def handshake(options, client_context):
    """Drive Twisted's own TLS server protocol against a Python ssl client,
    in memory: no reactor, no sockets.  Returns the client's view."""
    clock = Clock()  # Twisted coalesces small writes on a timer
    server = TLSMemoryBIOFactory(
        options, False, Factory.forProtocol(Echo), clock).buildProtocol(None)
    transport = StringTransport()
    server.makeConnection(transport)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(incoming, outgoing,
                                     server_hostname=HOST)

    def pump():
        data = outgoing.read()
        if data:
            server.dataReceived(data)
        clock.advance(0)
        reply = transport.value()
        transport.clear()
        if reply:
            incoming.write(reply)

    for _ in range(10):
        try:
            client.do_handshake()
        except ssl.SSLWantReadError:
            pump()
        else:
            break
    else:
        raise AssertionError("handshake did not finish")
    client.write(b"ping")
    pump()
    assert client.read(4) == b"ping"
    return client


def client_context(cert_path):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cert_path)  # and check the hostname
    return context


def test_handshake_tls13(pair):
    client = handshake(tls.server_context_factory(*pair),
                       client_context(pair[0]))
    assert client.version() == "TLSv1.3"


def test_handshake_tls12_aead(pair):
    context = client_context(pair[0])
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    client = handshake(tls.server_context_factory(*pair), context)
    assert client.version() == "TLSv1.2"
    name = client.cipher()[0]
    assert name.startswith("ECDHE-RSA-")
    assert "GCM" in name or "CHACHA20" in name


def test_old_protocols_refused(pair):
    context = client_context(pair[0])
    # Let the client really offer TLS 1.1, so the refusal is the server's.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError, match="(?i)protocol.version"):
        handshake(tls.server_context_factory(*pair), context)


def test_weak_ciphers_refused(pair):
    context = client_context(pair[0])
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("AES128-SHA:AES256-SHA:AES128-GCM-SHA256")
    with pytest.raises(ssl.SSLError, match="(?i)handshake.failure"):
        handshake(tls.server_context_factory(*pair), context)


def test_follow_address_issues_our_certificate_again(pair, tmp_path):
    cert_path, key_path = (str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    for src, dst in zip(pair, (cert_path, key_path)):
        pathlib.Path(dst).write_bytes(pathlib.Path(src).read_bytes())
    key_before = pathlib.Path(key_path).read_bytes()
    assert tls.follow_address(cert_path, key_path, HOST, UUID, "192.0.2.9")
    cert = load(cert_path)
    assert set(tls.certificate_addresses(cert)) == {
        "192.0.2.9", "127.0.0.1", "::1"}
    assert cert.public_key() == load(pair[0]).public_key()
    assert pathlib.Path(key_path).read_bytes() == key_before
    # Named already: left alone.
    before = pathlib.Path(cert_path).read_bytes()
    assert not tls.follow_address(cert_path, key_path, HOST, UUID,
                                  "192.0.2.9")
    assert pathlib.Path(cert_path).read_bytes() == before


def test_follow_address_leaves_a_certificate_someone_signed(tmp_path):
    import datetime
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    ca_key, leaf_key = (ec.generate_private_key(ec.SECP256R1())
                        for _ in range(2))
    now = datetime.datetime.now(datetime.timezone.utc)
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(
                NameOID.COMMON_NAME, HOST)]))
            .issuer_name(x509.Name([x509.NameAttribute(
                NameOID.COMMON_NAME, "Example CA")]))
            .public_key(leaf_key.public_key()).serial_number(7)
            .not_valid_before(now).not_valid_after(
                now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(
                ipaddress.ip_address("192.0.2.5"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = tmp_path / "installed.pem"
    pem.write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
        + leaf.public_bytes(serialization.Encoding.PEM))
    before = pem.read_bytes()
    assert not tls.follow_address(str(pem), None, HOST, UUID, "192.0.2.9")
    assert pem.read_bytes() == before
    # What serves it takes the file as it is.
    assert tls.HostCertificate(str(pem)).pem == leaf.public_bytes(
        serialization.Encoding.PEM).decode()
