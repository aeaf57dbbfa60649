"""
Who serves a VDI over NBD and how: VDI.get_nbd_info's
vdi_nbd_server_info records, and the TLS policy the networks' purposes
set (nbd: TLS required; insecure_nbd: plain; neither or both: no NBD).
"""

from cryptography import x509

from txxapi.errors import XenAPIError

NBD_PURPOSES = ("nbd", "insecure_nbd")


def tls_policy(db):
    """True (TLS), False (plain) or None (NBD is off: no network has an
    NBD purpose, or the contradictory pair is set)."""
    held = set()
    for network in db.refs("network"):
        held.update(db.fields("network", network)["purpose"])
    secure, insecure = "nbd" in held, "insecure_nbd" in held
    if secure == insecure:
        return None
    return secure


def export_name(vdi_uuid, session):
    return "/%s?session_id=%s" % (vdi_uuid, session)


def _addresses(db, host, networks):
    """IPv4 then IPv6 addresses of the host's attached PIFs on them."""
    out = []
    for pif in db.where("PIF", host=host):
        fields = db.fields("PIF", pif)
        if not fields["currently_attached"] or \
                fields["network"] not in networks:
            continue
        if fields["IP"]:
            out.append(fields["IP"])
        out.extend(ip for ip in fields["IPv6"] if ip)
    return out


def certificate_subject(pem, fallback):
    """The first DNS name of the certificate, else ``fallback``."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(
                x509.DNSName)
    except (ValueError, x509.ExtensionNotFound):
        names = []
    strict = [n for n in names if not n.startswith("*")]
    chosen = sorted(strict or names)
    return chosen[0] if chosen else fallback


def server_records(ctx, vdi):
    """VDI.get_nbd_info: a record per address this host's NBD server is
    reached at for the VDI."""
    db = ctx.db
    fields = db.fields("VDI", vdi)
    if fields["type"] == "cbt_metadata":
        raise XenAPIError("VDI_INCOMPATIBLE_TYPE", vdi, "cbt_metadata")
    server = ctx.server
    nbd = getattr(server, "nbd", None)
    if nbd is None or nbd.port is None:
        return []
    networks = {n for n in db.refs("network")
                if set(db.fields("network", n)["purpose"]) &
                set(NBD_PURPOSES)}
    host = server.host_ref
    attached = any(db.fields("PBD", pbd)["currently_attached"] and
                   db.fields("PBD", pbd)["host"] == host
                   for pbd in db.where("PBD", SR=fields["SR"]))
    addresses = _addresses(db, host, networks) if attached else []
    if not addresses:
        return []
    cert = nbd.certificate_pem()
    subject = certificate_subject(cert, db.fields("host", host)["hostname"])
    name = export_name(fields["uuid"], ctx.session)
    return [{"exportname": name, "address": address, "port": nbd.port,
             "cert": cert, "subject": subject} for address in addresses]
