"""
Authentication through twisted.cred: a Portal whose checkers turn a user
name and password into an avatar id.  Local users (PAM, or a passwd file)
are local superusers, like root in dom0; a directory (Active Directory)
checker plugs in beside them later and returns a subject identifier.
"""
