"""
Configuration: an INI file (see conf/txxapi.conf.example) overridden by
command-line options.  Every setting has one name, used in both places.
"""

import configparser
import os

DEFAULTS = {
    "data-dir": "/var/lib/txxapi",
    "bind": "",
    "http-port": "80",
    "https-port": "443",
    "nbd-port": "10809",
    "nbd-requests-in-flight": "16",
    "unix-socket": "",
    "auth": "pam",
    "pam-service": "txxapi",
    "backend": "auto",
    "certificate": "",
    "private-key": "",
    "login-failure-delay": "5",
    "max-rpc-size": str(300 * 1024),
    "header-read-timeout": "10",
    "header-total-timeout": "60",
    "max-connections-per-client": "1000",
    "rpc-http": "direct",
    "simulator-memory": str(64 * 1024 ** 3),
    "simulator-op-time": "0.05",
    "simulator-hostname": "",
    "shutdown-timeout": "1200",
    "import-db": "",
    "local-sr-dir": "",
    "iso-dir": "",
    "ad-dns-server": "",
    "ad-ca-file": "",
    "session-revalidation-interval": "300",
    "extauth-cache-ttl": "300",
    "import-read-timeout": "300",
    "metrics-interval": "5",
    "pool-heartbeat-interval": "30",
    "host-assumed-dead-interval": "600",
    "pool-call-timeout": "10",
    "pool-lease-ttl": "10",
    "metrics-token-file": "",
}
SECTION = "xapi"
# The local socket's name in the data dir (XAPI's is /var/lib/xcp/xapi).
LOCAL_SOCKET = "xapi"


class ConfigError(Exception):
    pass


def read_token(path):
    """The secret a token file holds (its one line, stripped)."""
    with open(path) as f:
        token = f.read().strip()
    if not token or any(c.isspace() for c in token):
        raise ConfigError("%s must hold one token, without spaces" % path)
    return token


def load(path=None, overrides=None):
    """Settings from the file (if any) with ``overrides`` on top; unknown
    keys in the file are an error, reported all at once."""
    settings = dict(DEFAULTS)
    if path:
        parser = configparser.ConfigParser()
        with open(path) as f:
            parser.read_file(f)
        if parser.has_section(SECTION):
            unknown = [k for k in parser[SECTION] if k not in DEFAULTS]
            if unknown:
                raise ConfigError("unknown settings in %s: %s"
                                  % (path, ", ".join(sorted(unknown))))
            settings.update(parser[SECTION])
    for k, v in (overrides or {}).items():
        if v is not None:
            settings[k] = str(v)
    return settings


def local_socket_path(settings):
    """Where the local Unix socket listens; None when it is disabled."""
    path = settings["unix-socket"]
    if path == "none":
        return None
    return path or os.path.join(settings["data-dir"], LOCAL_SOCKET)
