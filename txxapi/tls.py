"""
TLS for the API server, terminated in-process (upstream puts stunnel in
front of xapi; we let Twisted do it).

A host needs a certificate from its first start, so ensure_self_signed()
makes one if none exists; server_context_factory() turns the PEM files into
what SSL4ServerEndpoint / listenSSL want.  Like XAPI's own xapi-ssl.pem,
the key and the certificate may live in a single PEM file.

A self-signed certificate of ours names the host's management address;
when that address moves, follow_address() issues it again for the new one
(same key, so a client that pins the key still recognises the host), and
HostCertificate, what the listeners serve, takes it up for the
connections that follow.
"""

import datetime
import ipaddress
import os
import re
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import (
    AcceptableCiphers, CertificateOptions, TLSVersion)
from zope.interface import implementer

from txxapi.files import write_atomically

__all__ = ["ensure_self_signed", "follow_address", "server_context_factory",
           "HostCertificate", "fingerprint_sha256", "CIPHERS"]

# TLS 1.2 suites: forward secrecy and AEAD only.  TLS 1.3 suites are all
# AEAD and are left at OpenSSL's defaults.  ECDSA variants are listed for
# operators who install an EC certificate; our own certificate is RSA.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

VALIDITY = datetime.timedelta(days=3650)

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?\r?\n-----END \1-----",
    re.DOTALL)


def _pem_blocks(data):
    """[(label, block bytes)] for each PEM block in data, in order."""
    return [(m.group(1).decode("ascii"), m.group(0) + b"\n")
            for m in _PEM_BLOCK.finditer(data)]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _alt_names(hostname, ips):
    names = []
    addresses = []
    for candidate in [hostname, *ips, "127.0.0.1", "::1"]:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            if candidate not in names:
                names.append(candidate)
        else:
            if address not in addresses:
                addresses.append(address)
    return ([x509.DNSName(n) for n in names]
            + [x509.IPAddress(a) for a in addresses])


def _self_signed(hostname, host_uuid, ips, key=None):
    if key is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # CN is limited to 64 characters; the SAN carries the full name.
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])]
    if host_uuid:
        # Tells apart the certificates of hosts sharing a hostname.
        attributes.append(
            x509.NameAttribute(NameOID.SERIAL_NUMBER, str(host_uuid)))
    name = x509.Name(attributes)
    # A little slack for clients whose clock is behind ours.
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(hours=1)
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(secrets.randbits(127) | 1)
        .not_valid_before(not_before)
        .not_valid_after(not_before + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_alt_names(hostname, ips)),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                       critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True,
                content_commitment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False),
            critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption())
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def ensure_self_signed(cert_path, key_path, hostname, host_uuid=None,
                       ips=()):
    """Create a self-signed RSA-2048 certificate for hostname, valid ten
    years, unless one is already there; existing files are left untouched.

    key_path None puts the key and the certificate in cert_path, key
    first, as XAPI's own PEM files do.  The subjectAltName lists hostname,
    the loopback addresses and any address in ips; host_uuid, if given, is
    recorded as the subject's serialNumber attribute.  RSA rather than EC
    because old XenAPI clients and SDKs may not do ECDSA.
    """
    if key_path is None:
        if os.path.exists(cert_path):
            return
    elif os.path.exists(cert_path) and os.path.exists(key_path):
        return
    _write(cert_path, key_path, *_self_signed(hostname, host_uuid, ips))


def _write(cert_path, key_path, key_pem, cert_pem):
    if key_path is None:
        write_atomically(cert_path, key_pem + cert_pem, 0o600)
    else:
        # Key first: once the certificate exists the pair is complete.
        write_atomically(key_path, key_pem, 0o600)
        write_atomically(cert_path, cert_pem, 0o644)


def certificate_addresses(certificate):
    """The IP addresses a certificate's subjectAltName names, as text."""
    try:
        names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(a) for a in names.get_values_for_type(x509.IPAddress)]


def follow_address(cert_path, key_path, hostname, host_uuid, address):
    """Issue the self-signed certificate in cert_path again, on its own
    key, naming ``address`` (and the loopback ones) rather than the
    address it named, unless it names it already; whether it did.  A
    certificate signed by anyone else (one an operator installed) is
    never rewritten: what it names is its signer's business."""
    try:
        wanted = ipaddress.ip_address(address)
    except ValueError:
        return False
    # The certificate first: the key (slow to load: its checks) only
    # when it is issued again.
    certificates = _certificates(_read(cert_path), cert_path)
    certificate, chain = certificates[0], certificates[1:]
    if chain or certificate.issuer != certificate.subject:
        return False
    if wanted in map(ipaddress.ip_address,
                     certificate_addresses(certificate)):
        return False
    key = _load(cert_path, key_path)[0]
    key_pem, cert_pem = _self_signed(hostname, host_uuid, [address], key)
    _write(cert_path, key_path, key_pem, cert_pem)
    return True


class _ServerOptions(CertificateOptions):
    """CertificateOptions that also refuses renegotiation."""

    def getContext(self):
        context = super().getContext()
        # The parent caches one context; pyOpenSSL refuses changes to it
        # once a connection used it, so set the options only the first time.
        if getattr(self, "_hardened", None) is not context:
            context.set_options(SSL.OP_NO_RENEGOTIATION
                                | SSL.OP_NO_COMPRESSION)
            self._hardened = context
        return context


def _certificates(cert_data, cert_path):
    """The certificates of a PEM file, leaf first; raises without any."""
    certificates = [x509.load_pem_x509_certificate(block)
                    for label, block in _pem_blocks(cert_data)
                    if label == "CERTIFICATE"]
    if not certificates:
        raise ValueError("no certificate in %s" % (cert_path,))
    return certificates


def _load(cert_path, key_path):
    # cryptography objects rather than pyOpenSSL's X509/PKey, which
    # pyOpenSSL now deprecates; Twisted hands them straight to the context.
    cert_data = _read(cert_path)
    key_data = cert_data if key_path is None else _read(key_path)
    certificates = _certificates(cert_data, cert_path)
    keys = [block for label, block in _pem_blocks(key_data)
            if label.endswith("PRIVATE KEY")]
    if not keys:
        raise ValueError("no private key in %s"
                         % (cert_path if key_path is None else key_path,))
    key = serialization.load_pem_private_key(keys[0], password=None)
    return key, certificates[0], certificates[1:]


def server_context_factory(cert_path, key_path=None):
    """A connection creator for SSL4ServerEndpoint / listenSSL serving the
    certificate in cert_path (leaf first, then any chain) with the key in
    key_path, or in cert_path too when key_path is None.

    TLS 1.2 and later, forward-secret AEAD suites, no compression, no
    renegotiation.  Raises if the files are missing, malformed or do not
    match.
    """
    key, certificate, chain = _load(cert_path, key_path)
    options = _ServerOptions(
        privateKey=key,
        certificate=certificate,
        extraCertChain=chain or None,
        raiseMinimumTo=TLSVersion.TLSv1_2,
        acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(CIPHERS),
    )
    # Builds the context now so that a key/certificate mismatch is reported
    # at startup rather than on the first connection.
    options.getContext()
    return options


@implementer(IOpenSSLServerConnectionCreator)
class HostCertificate:
    """The host certificate as the listeners serve it (a connection
    creator for SSL4ServerEndpoint and startTLS): each new connection
    gets the certificate of the last load(), connections already open
    keep theirs.  ``pem``: its certificates, without the key."""

    def __init__(self, cert_path, key_path=None):
        self.cert_path, self.key_path = cert_path, key_path
        self.load()

    def load(self):
        """(Re)read the files; raises, keeping the last ones, if they are
        missing, malformed or do not match."""
        options = server_context_factory(self.cert_path, self.key_path)
        self.pem = "".join(block.decode("ascii") for label, block
                           in _pem_blocks(_read(self.cert_path))
                           if label == "CERTIFICATE")
        self._options = options

    def serverConnectionForTLS(self, protocol):
        return self._options.serverConnectionForTLS(protocol)


def fingerprint_sha256(cert_path):
    """SHA-256 fingerprint of the (first) certificate in cert_path, as
    colon-separated upper-case hex pairs."""
    for label, block in _pem_blocks(_read(cert_path)):
        if label == "CERTIFICATE":
            digest = x509.load_pem_x509_certificate(block).fingerprint(
                hashes.SHA256())
            return ":".join("%02X" % b for b in digest)
    raise ValueError("no certificate in %s" % (cert_path,))
