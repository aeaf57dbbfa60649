"""
Password checkers: PAM for the host's own accounts, and a passwd file of
``user:$6$...`` lines (SHA-512 crypt hashes as ``openssl passwd -6``
prints them).  Both refuse with twisted.cred's UnauthorizedLogin; PAM's
blocking conversation runs on the thread pool, never on the reactor.
"""

import ctypes
import ctypes.util
import hmac

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer, threads
from zope.interface import implementer


class LocalUser(bytes):
    """Avatar id of a user authenticated against the host itself."""


def _crypt_function():
    try:
        import crypt  # deprecated in 3.11, gone in 3.13
        return crypt.crypt
    except ImportError:
        lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
        lib.crypt.restype = ctypes.c_char_p
        lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]

        def crypt(word, salt):
            out = lib.crypt(word.encode(), salt.encode())
            return out.decode() if out else None
        return crypt


_crypt = None


def crypt_matches(password, hashed):
    global _crypt
    if _crypt is None:
        _crypt = _crypt_function()
    computed = _crypt(password, hashed)
    return computed is not None and hmac.compare_digest(computed, hashed)


@implementer(ICredentialsChecker)
class PasswdFileChecker:
    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, path):
        self.path = path

    def _users(self):
        users = {}
        with open(self.path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and ":" in line:
                    user, hashed = line.split(":", 1)
                    users[user] = hashed
        return users

    def check_blocking(self, creds):
        user, password = _texts(creds)
        hashed = self._users().get(user)
        if hashed and crypt_matches(password, hashed):
            return LocalUser(user.encode())
        raise error.UnauthorizedLogin("Authentication failure")

    def requestAvatarId(self, creds):
        return defer.maybeDeferred(self.check_blocking, creds)


@implementer(ICredentialsChecker)
class PAMChecker:
    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, service="txxapi"):
        self.service = service

    def check_blocking(self, creds):
        import pam
        user, password = _texts(creds)
        p = pam.pam()
        if p.authenticate(user, password, service=self.service):
            return LocalUser(user.encode())
        raise error.UnauthorizedLogin(p.reason or "Authentication failure")

    def requestAvatarId(self, creds):
        return threads.deferToThread(self.check_blocking, creds)


def _texts(creds):
    return tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                 for v in (creds.username, creds.password))
