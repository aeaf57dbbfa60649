"""
The scrape token of /metrics, from its file (``--metrics-token-file``),
read again whenever the file changes (its size, mtime or inode), so a
rotated token takes effect without a restart.  A file that is gone or
does not hold one token (an editor half-way through writing it) admits
no scraper until it does again; the change is logged once.
"""

import os

from twisted.logger import Logger

from txxapi.config import ConfigError, read_token

log = Logger()


class TokenFile:
    def __init__(self, path):
        self.path = path
        self._seen = self._stat()
        self._token = read_token(path)

    def _stat(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def current(self):
        """The token now, or None while the file holds none."""
        seen = self._stat()
        if seen != self._seen:
            self._seen = seen
            try:
                self._token = read_token(self.path)
                log.info("metrics: scrape token read again from {path}",
                         path=self.path)
            except (OSError, ConfigError) as e:
                self._token = None
                log.warn("metrics: no scrape token: {e}", e=e)
        return self._token
