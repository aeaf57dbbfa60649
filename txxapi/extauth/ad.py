"""
Active Directory through LDAP (python-ldap), the directory behind
auth_type ``AD``.  Domain controllers come from DNS (the SRV records
``_ldap._tcp.dc._msdcs.<domain>``, through the system's resolver or a
given server); every connection is StartTLS with the certificate checked
against the system's store or a given CA file.  A user is authenticated
by binding as them (``user@REALM``, ``DOMAIN\\user`` or a bare name);
subjects are SIDs, a user's groups the transitive set AD computes
(``tokenGroups``).  Look-ups of others bind with the account given when
enabling.

Every method blocks (DNS, LDAP) and runs on the external authentication
thread pool, each network step with a timeout.
"""

import os
import re
import secrets
import socket
import struct
import time

import dns.exception
import dns.resolver
import ldap
from ldap.filter import escape_filter_chars

from txxapi.extauth.pam import AuthFailure, NotResolved
from txxapi.extauth import settings as _settings

# (Kept here too, for callers of this module.)
Settings = _settings.Settings

SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
LDAP_PORT = 389

# userAccountControl bits.
ACCOUNT_DISABLED = 0x2
LOCKED_OUT = 0x10
PASSWORD_EXPIRED = 0x800000
WORKSTATION_TRUST_ACCOUNT = 0x1000
NEVER_EXPIRES = (0, 0x7FFFFFFFFFFFFFFF)

# The AD reasons a bind is refused for (the "data" code of its message).
_BIND_REASONS = {"525": "user not found", "52e": "invalid credentials",
                 "530": "not permitted to log on at this time",
                 "531": "not permitted to log on at this workstation",
                 "532": "password expired", "533": "account disabled",
                 "701": "account expired", "773": "password must be reset",
                 "775": "account locked out"}


class ADError(Exception):
    """The directory failed; ``tag`` is XAPI's error suffix (e.g.
    DOMAIN_LOOKUP_FAILED, UNAVAILABLE, WRONG_CREDENTIALS)."""

    def __init__(self, tag, message):
        Exception.__init__(self, message)
        self.tag = tag


def sid_text(raw):
    """An objectSid's bytes as S-1-5-21-..."""
    revision, count = raw[0], raw[1]
    authority = int.from_bytes(raw[2:8], "big")
    subs = struct.unpack("<%dI" % count, raw[8:8 + 4 * count])
    return "S-%d-%d" % (revision, authority) + "".join(
        "-%d" % s for s in subs)


def sid_bytes(text):
    parts = text.split("-")
    if len(parts) < 3 or parts[0] != "S" or not all(
            p.isdigit() for p in parts[1:]):
        raise NotResolved(text)
    subs = [int(p) for p in parts[3:]]
    if len(subs) > 15 or any(s > 0xFFFFFFFF for s in subs):
        raise NotResolved(text)
    return bytes([int(parts[1]), len(subs)]) + int(parts[2]).to_bytes(
        6, "big") + struct.pack("<%dI" % len(subs), *subs)


def _filter_bytes(raw):
    return "".join("\\%02x" % b for b in raw)


def base_dn(domain):
    return ",".join("DC=" + part for part in domain.split("."))


class ADDirectory:
    auth_type = "AD"

    def __init__(self, settings):
        self.settings = settings
        self.domain = None
        self.account = None      # (bind name, password) for look-ups
        self.workgroup = ""

    # -- finding and reaching a DC --------------------------------------------

    def _resolver(self):
        s = self.settings
        if not s.dns_server:
            r = dns.resolver.Resolver()
        else:
            r = dns.resolver.Resolver(configure=False)
            host, _, port = s.dns_server.partition(":")
            r.nameservers = [host]
            if port:
                r.port = int(port)
        r.lifetime = s.timeout
        return r

    def controllers(self, domain):
        """[(host name, address, port)] of the domain's DCs, in the SRV
        records' order of preference."""
        r = self._resolver()
        name = "_ldap._tcp.dc._msdcs.%s" % domain
        try:
            answer = r.resolve(name, "SRV")
        except dns.exception.DNSException as e:
            raise ADError("DOMAIN_LOOKUP_FAILED",
                          "no domain controller of %s found (%s: %s)"
                          % (domain, name, e.__class__.__name__))
        found = []
        for srv in sorted(answer, key=lambda a: (a.priority, -a.weight)):
            host = str(srv.target).rstrip(".")
            try:
                addresses = [a.address for a in r.resolve(host, "A")]
            except dns.exception.DNSException:
                addresses = []
            for address in addresses:
                found.append((host, address, srv.port or LDAP_PORT))
        if not found:
            raise ADError("DOMAIN_LOOKUP_FAILED",
                          "no address of a domain controller of %s" % domain)
        return found

    def _uri(self, host, address, port):
        """The host name where this machine resolves it to the address
        DNS gave (its certificate names it), else the address."""
        try:
            if address in {i[4][0] for i in socket.getaddrinfo(
                    host, port, socket.AF_INET, socket.SOCK_STREAM)}:
                return "ldap://%s:%d" % (host, port)
        except OSError:
            pass
        return "ldap://%s:%d" % (address, port)

    def connect(self, domain):
        """A StartTLS connection to the first DC that answers."""
        s = self.settings
        errors = []
        for host, address, port in self.controllers(domain):
            conn = ldap.initialize(self._uri(host, address, port))
            conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
            conn.set_option(ldap.OPT_REFERRALS, 0)
            conn.set_option(ldap.OPT_NETWORK_TIMEOUT, s.timeout)
            conn.set_option(ldap.OPT_TIMEOUT, s.timeout)
            conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT,
                            ldap.OPT_X_TLS_DEMAND)
            ca = s.ca_file or (SYSTEM_CA if os.path.exists(SYSTEM_CA)
                               else "")
            if ca:
                conn.set_option(ldap.OPT_X_TLS_CACERTFILE, ca)
            conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
            try:
                conn.start_tls_s()
                return conn
            except ldap.CONNECT_ERROR as e:
                raise ADError("INVALID_TRUSTED_CERTS",
                              "TLS with %s failed: %s" % (host, _text(e)))
            except ldap.LDAPError as e:
                errors.append("%s: %s" % (host, _text(e)))
        raise ADError("UNAVAILABLE", "no domain controller of %s answered "
                      "(%s)" % (domain, "; ".join(errors)))

    def bind_name(self, user):
        if "@" in user or "\\" in user:
            return user
        return "%s@%s" % (user, self.domain.upper())

    def _bound(self, name, password):
        conn = self.connect(self.domain)
        try:
            conn.simple_bind_s(self.bind_name(name), password)
        except ldap.INVALID_CREDENTIALS as e:
            conn.unbind_s()
            raise AuthFailure(_bind_reason(e))
        except ldap.LDAPError as e:
            conn.unbind_s()
            raise ADError("UNAVAILABLE", _text(e))
        return conn

    # -- enabling ---------------------------------------------------------------

    def join(self, domain, user, password, netbios_name, ou=""):
        """Join the domain as winbind does: the given account (checked by
        binding as it) creates or resets this host's computer account,
        whose password is random and is all this host keeps.  Answers
        (the configuration to keep, the machine password)."""
        self.domain = domain
        try:
            conn = self._bound(user, password)
        except AuthFailure as e:
            raise ADError("WRONG_CREDENTIALS", str(e))
        machine_password = _machine_password()
        try:
            self.workgroup = self._netbios_name(conn)
            self._set_machine_account(conn, netbios_name, ou,
                                      machine_password)
        except ldap.INSUFFICIENT_ACCESS as e:
            raise ADError("PERMISSION_DENIED", _text(e))
        except ldap.LDAPError as e:
            raise ADError("INVALID_OU" if ou else "", _text(e))
        finally:
            conn.unbind_s()
        self.account = (netbios_name + "$", machine_password)
        configuration = {"domain": domain, "user": user,
                         "workgroup": self.workgroup,
                         "netbios_name": netbios_name,
                         "machine_pwd_last_change_time":
                             str(int(time.time()))}
        if ou:
            configuration["ou"] = ou
        return configuration, machine_password

    def _machine_account(self, conn, netbios_name):
        found = self._search(conn, "(&(objectClass=computer)"
                             "(sAMAccountName=%s$))"
                             % escape_filter_chars(netbios_name), ["dn"])
        return found[0][0] if found else None

    def _set_machine_account(self, conn, netbios_name, ou, password):
        encoded = ('"%s"' % password).encode("utf-16-le")
        dn = self._machine_account(conn, netbios_name)
        if dn is not None:      # joined before: take the account over
            conn.modify_s(dn, [
                (ldap.MOD_REPLACE, "unicodePwd", [encoded]),
                (ldap.MOD_REPLACE, "userAccountControl",
                 [str(WORKSTATION_TRUST_ACCOUNT).encode()])])
            return
        container = ou or "CN=Computers," + base_dn(self.domain)
        conn.add_s("CN=%s,%s" % (netbios_name, container), [
            ("objectClass", [b"top", b"person", b"organizationalPerson",
                             b"user", b"computer"]),
            ("sAMAccountName", [(netbios_name + "$").encode()]),
            ("dNSHostName", [("%s.%s" % (netbios_name.lower(),
                                         self.domain)).encode()]),
            ("userAccountControl",
             [str(WORKSTATION_TRUST_ACCOUNT).encode()]),
            ("unicodePwd", [encoded])])

    def restore(self, configuration, password):
        self.domain = configuration.get("domain")
        self.workgroup = configuration.get("workgroup", "")
        self.account = (configuration.get("netbios_name", "") + "$",
                        password)

    def leave(self, user=None, password=None):
        """Forget the domain; with an account allowed to, also delete
        this host's computer account (as ``net ads leave`` does)."""
        if user and self.domain and self.account:
            try:
                conn = self._bound(user, password)
            except AuthFailure as e:
                raise ADError("WRONG_CREDENTIALS", str(e))
            try:
                dn = self._machine_account(conn, self.account[0][:-1])
                if dn is not None:
                    conn.delete_s(dn)
            except ldap.INSUFFICIENT_ACCESS as e:
                raise ADError("PERMISSION_DENIED", _text(e))
            except ldap.LDAPError as e:
                raise ADError("", _text(e))
            finally:
                conn.unbind_s()
        self.domain = self.account = None

    def _netbios_name(self, conn):
        result = conn.search_s(
            "CN=Partitions,CN=Configuration," + base_dn(self.domain),
            ldap.SCOPE_ONELEVEL, "(&(objectClass=crossRef)(dnsRoot=%s))"
            % escape_filter_chars(self.domain), ["nETBIOSName"])
        for _, attrs in result:
            if attrs and attrs.get("nETBIOSName"):
                return attrs["nETBIOSName"][0].decode()
        return self.domain.split(".")[0].upper()

    # -- look-ups -----------------------------------------------------------------

    def _lookup(self, fn):
        if self.account is None:
            raise ADError("UNAVAILABLE", "Active Directory is not joined")
        try:
            conn = self._bound(*self.account)
        except AuthFailure as e:
            raise ADError("UNAVAILABLE",
                          "the directory refused the service account: %s" % e)
        try:
            return fn(conn)
        except ldap.LDAPError as e:
            raise ADError("UNAVAILABLE", _text(e))
        finally:
            conn.unbind_s()

    def _search(self, conn, ldap_filter, attrs):
        result = conn.search_ext_s(base_dn(self.domain), ldap.SCOPE_SUBTREE,
                                   ldap_filter, attrs,
                                   timeout=self.settings.timeout)
        return [(dn, a) for dn, a in result if dn]

    def _by_name(self, conn, name):
        if "\\" in name:
            name = name.split("\\", 1)[1]
        if "@" in name:
            f = "(userPrincipalName=%s)" % escape_filter_chars(name)
        else:
            f = "(sAMAccountName=%s)" % escape_filter_chars(name)
        found = self._search(conn, "(&(|(objectClass=user)"
                             "(objectClass=group))%s)" % f, ["objectSid"])
        if not found:
            raise NotResolved(name)
        return sid_text(found[0][1]["objectSid"][0])

    def _by_sid(self, conn, sid, attrs):
        found = self._search(conn, "(objectSid=%s)" % _filter_bytes(
            sid_bytes(sid)), attrs)
        if not found:
            raise NotResolved(sid)
        return found[0]

    def subject_identifier(self, name):
        return self._lookup(lambda conn: self._by_name(conn, name))

    def subject_information(self, sid):
        attrs = ["objectClass", "sAMAccountName", "userPrincipalName",
                 "displayName", "userAccountControl", "accountExpires",
                 "lockoutTime", "msDS-User-Account-Control-Computed"]
        return self._lookup(lambda conn: self._information(
            sid, *self._by_sid(conn, sid, attrs)))

    def _information(self, sid, dn, a):
        def text(name):
            return a[name][0].decode() if a.get(name) else ""
        name = "%s\\%s" % (self.workgroup, text("sAMAccountName"))
        if b"group" in a.get("objectClass", []):
            return {"subject-name": name, "subject-sid": sid,
                    "subject-is-group": "true"}
        control = int(text("userAccountControl") or 0)
        computed = int(text("msDS-User-Account-Control-Computed") or 0)
        expires = int(text("accountExpires") or 0)
        display = text("displayName")
        return {
            "subject-name": name,
            "subject-sid": sid,
            "subject-upn": text("userPrincipalName") or "%s@%s" % (
                text("sAMAccountName"), self.domain),
            "subject-displayname": "%s\\%s" % (self.workgroup, display)
            if display else name,
            "subject-gecos": display,
            "subject-is-group": "false",
            "subject-account-disabled": _flag(control & ACCOUNT_DISABLED),
            "subject-account-locked": _flag(
                (control | computed) & LOCKED_OUT),
            "subject-account-expired": _flag(
                expires not in NEVER_EXPIRES and _filetime_past(expires)),
            "subject-password-expired": _flag(
                (control | computed) & PASSWORD_EXPIRED),
        }

    def group_membership(self, sid):
        """Every group the subject is in, through nesting too."""
        def groups(conn):
            dn, _ = self._by_sid(conn, sid, ["objectSid"])
            result = conn.search_ext_s(dn, ldap.SCOPE_BASE,
                                       "(objectClass=*)", ["tokenGroups"],
                                       timeout=self.settings.timeout)
            raw = result[0][1].get("tokenGroups", []) if result else []
            return [s for s in map(sid_text, raw) if s != sid]
        return self._lookup(groups)

    # -- authentication -----------------------------------------------------------

    def authenticate(self, user, password):
        if not password:
            # An empty password would be an anonymous bind, not a check.
            raise AuthFailure("invalid credentials")
        try:
            conn = self._bound(user, password)
        except ADError as e:
            raise AuthFailure(str(e))
        try:
            name = user.split("\\", 1)[1] if "\\" in user else user
            return self._by_name(conn, name)
        except NotResolved:
            raise AuthFailure("couldn't get SID from username='%s'" % user)
        finally:
            conn.unbind_s()


def machine_name(hostname):
    """A NetBIOS computer name from a host name: its first label, what
    NetBIOS allows, upper case, at most 15 characters."""
    name = re.sub(r"[^A-Za-z0-9-]", "", hostname.split(".")[0]).upper()
    return name[:15] or "XENSERVER"


def _machine_password():
    # Long and random; the suffix meets AD's complexity rule (three of
    # upper case, lower case, digits and symbols) whatever the draw.
    return secrets.token_urlsafe(36) + "aZ9!"


def _flag(value):
    return "true" if value else "false"


def _filetime_past(filetime):
    return (filetime / 1e7 - 11644473600) < time.time()


def _text(e):
    info = e.args[0] if e.args and isinstance(e.args[0], dict) else {}
    return " ".join(str(info[k]) for k in ("desc", "info") if info.get(k)) \
        or str(e)


def _bind_reason(e):
    text = _text(e)
    for code, reason in _BIND_REASONS.items():
        if "data %s," % code in text:
            return reason
    return text
