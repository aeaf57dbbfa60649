"""
Where Active Directory is looked for: apart from txxapi.extauth.ad, so
that a host reads its settings at start without importing python-ldap and
dnspython (a third of a second of every start) before AD is used.
"""

# Seconds a DNS look-up or an LDAP operation may take.
TIMEOUT = 10.0


class Settings:
    """Where the directory is found and how its certificate is checked."""

    def __init__(self, dns_server="", ca_file="", timeout=TIMEOUT):
        self.dns_server = dns_server
        self.ca_file = ca_file
        self.timeout = timeout
