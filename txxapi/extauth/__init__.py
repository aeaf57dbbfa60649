"""
External authentication: the directory a host's ``external_auth_type``
names (XAPI's extauth plugins), and logins of the subjects it knows.

``PAM`` is XAPI's PAM/NSS plugin (local accounts; subject identifiers
``u<uid>`` and ``g<gid>``).  ``AD`` is not available here: enabling it
fails with AUTH_ENABLE_FAILED_UNAVAILABLE.
"""
