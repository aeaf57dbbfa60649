"""
``twistd xapi``: command-line options and the service tree they build.
"""

import os

from twisted.application import service
from twisted.python import usage

from txxapi import config


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "INI configuration file ([xapi] section)."],
        ["data-dir", "d", None,
         "Database, certificate and state directory (/var/lib/txxapi)."],
        ["bind", "b", None, "Address to listen on (all addresses)."],
        ["http-port", None, None, "Plain HTTP port (80); 0 disables."],
        ["https-port", None, None, "HTTPS port (443); 0 disables."],
        ["nbd-port", None, None, "NBD server port (10809); 0 disables."],
        ["nbd-requests-in-flight", None, None,
         "Reads one NBD connection may have under way at once (16)."],
        ["unix-socket", None, None,
         "Local Unix socket serving the HTTP API, where callers are "
         "trusted as root (<data-dir>/xapi; 'none' disables)."],
        ["auth", "a", None,
         "Authentication: 'pam' (default) or 'passwd:FILE' (user:HASH "
         "lines, SHA-512 crypt)."],
        ["pam-service", None, None, "PAM service name (txxapi)."],
        ["backend", None, None,
         "VM backend: 'auto' (default: libxl on a Xen host, else the "
         "simulator), 'simulator' or 'libxl'."],
        ["certificate", None, None,
         "PEM certificate (and key, unless --private-key) for HTTPS; a "
         "self-signed one is generated in the data dir otherwise."],
        ["private-key", None, None, "PEM private key for --certificate."],
        ["login-failure-delay", None, None,
         "Seconds a failed login waits before answering (5)."],
        ["max-rpc-size", None, None, "Largest RPC body in bytes (307200)."],
        ["header-read-timeout", None, None,
         "Seconds a request's header may pause before the client gets a "
         "408 (10)."],
        ["header-total-timeout", None, None,
         "Seconds a request's header may take in all (60)."],
        ["max-connections-per-client", None, None,
         "Connections one client address may hold open (1000; 0: no cap)."],
        ["rpc-http", None, None,
         "'direct' (default): RPC calls are read and answered without "
         "twisted.web's Request; 'twisted-web': every request through "
         "twisted.web."],
        ["simulator-memory", None, None,
         "Memory of the simulated host in bytes (64 GiB)."],
        ["simulator-hostname", None, None,
         "Host name of the simulated host (this machine's)."],
        ["simulator-op-time", None, None,
         "Seconds each simulated domain operation takes (0.05)."],
        ["shutdown-timeout", None, None,
         "Seconds a clean shutdown or reboot waits for the guest (1200)."],
        ["import-db", None, None,
         "On a first start, take over this XAPI state.db (this host "
         "becomes its pool's master)."],
        ["local-sr-dir", None, None,
         "Directory the local SR is created in on a first start, as "
         "DIR/<sr-uuid> (<data-dir>/sr)."],
        ["iso-dir", None, None,
         "Directory of .iso images served as an ISO library SR (none)."],
        ["ad-dns-server", None, None,
         "DNS server (ADDRESS[:PORT]) that finds Active Directory domain "
         "controllers (the system's resolver)."],
        ["ad-ca-file", None, None,
         "PEM CA certificates that Active Directory's TLS certificates "
         "are checked against (the system's store)."],
        ["import-read-timeout", None, None,
         "Seconds VM.import from a URL waits for data from a server that "
         "sends nothing before it fails (300; 0: forever)."],
        ["extauth-cache-ttl", None, None,
         "Seconds the directory's answers of a user (account state, "
         "groups) are kept for further logins (300; 0: none)."],
        ["session-revalidation-interval", None, None,
         "Seconds between checks that externally authenticated users may "
         "still log in; their sessions end when not (300; 0: never)."],
        ["metrics-interval", None, None,
         "Seconds between metrics samples, the RRDs' step (5)."],
        ["pool-heartbeat-interval", None, None,
         "Seconds between a slave's heartbeats to its master, and between "
         "the master's checks of them (30)."],
        ["host-assumed-dead-interval", None, None,
         "Seconds without a heartbeat after which the master takes a host "
         "for dead (host_metrics.live false) (600)."],
        ["pool-call-timeout", None, None,
         "Seconds a call to another host of the pool waits for its answer; "
         "a forwarded operation, which has no such bound, fails once its "
         "host leaves a ping unanswered as long (10)."],
        ["pool-lease-ttl", None, None,
         "Seconds a master may go without renewing its mastership on "
         "etcd before it stops writing and another host may take over "
         "(10)."],
        ["metrics-token-file", None, None,
         "File holding a bearer token that scrapers may send to GET "
         "/metrics instead of a session (none)."],
    ]

    def postOptions(self):
        overrides = {k: self[k] for k in config.DEFAULTS if k in self}
        try:
            self.settings = config.load(self["config"], overrides)
        except (OSError, config.ConfigError) as e:
            raise usage.UsageError(str(e))
        auth = self.settings["auth"]
        if auth != "pam" and not auth.startswith("passwd:"):
            raise usage.UsageError("--auth must be 'pam' or 'passwd:FILE'")
        if auth.startswith("passwd:") and not os.path.exists(auth[7:]):
            raise usage.UsageError("passwd file %s does not exist" % auth[7:])
        for key in ("http-port", "https-port", "nbd-port", "max-rpc-size",
                    "simulator-memory", "max-connections-per-client",
                    "metrics-interval", "nbd-requests-in-flight"):
            if not self.settings[key].isdigit():
                raise usage.UsageError("--%s must be a number" % key)
        if self.settings["rpc-http"] not in ("direct", "twisted-web"):
            raise usage.UsageError("--rpc-http must be 'direct' or "
                                   "'twisted-web'")
        if not self.settings["pool-lease-ttl"].isdigit() or \
                int(self.settings["pool-lease-ttl"]) < 2:
            raise usage.UsageError("--pool-lease-ttl must be a number of "
                                   "seconds, at least 2")
        for key in ("metrics-interval", "nbd-requests-in-flight"):
            if int(self.settings[key]) < 1:
                raise usage.UsageError("--%s must be at least 1" % key)
        for key in ("pool-heartbeat-interval", "pool-call-timeout"):
            try:
                if float(self.settings[key]) <= 0:
                    raise ValueError
            except ValueError:
                raise usage.UsageError("--%s must be a positive number of "
                                       "seconds" % key)
        if self.settings["metrics-token-file"]:
            try:
                config.read_token(self.settings["metrics-token-file"])
            except (OSError, config.ConfigError) as e:
                raise usage.UsageError("--metrics-token-file: %s" % e)
        for key in ("simulator-op-time", "shutdown-timeout",
                    "header-read-timeout", "header-total-timeout",
                    "host-assumed-dead-interval"):
            try:
                if float(self.settings[key]) < 0:
                    raise ValueError
            except ValueError:
                raise usage.UsageError("--%s must be a number of seconds"
                                       % key)


def makeService(options):
    from txxapi.service import XapiService
    top = service.MultiService()
    XapiService(options.settings).setServiceParent(top)
    return top
