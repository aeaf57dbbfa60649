"""
External authentication: the directory a host's ``external_auth_type``
names (XAPI's extauth plugins), and logins of the subjects it knows.

``PAM`` is XAPI's PAM/NSS plugin (local accounts; subject identifiers
``u<uid>`` and ``g<gid>``); ``AD`` is Active Directory over LDAP (ad.py).
service.py enables, disables and restores them and answers logins.
"""
