"""
Configuration: an INI file (see conf/txxapi.conf.example) overridden by
command-line options.  Every setting has one name, used in both places.
"""

import configparser

DEFAULTS = {
    "data-dir": "/var/lib/txxapi",
    "bind": "",
    "http-port": "80",
    "https-port": "443",
    "nbd-port": "10809",
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
    "shutdown-timeout": "1200",
    "import-db": "",
    "local-sr-dir": "",
    "iso-dir": "",
    "ad-dns-server": "",
    "ad-ca-file": "",
    "session-revalidation-interval": "300",
    "metrics-interval": "5",
}
SECTION = "xapi"


class ConfigError(Exception):
    pass


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
