"""
Item: logins of Active Directory users against a real Samba AD DC on a
loopback alias (needs root and Samba): session.login_with_password of a
user let in through a nested group, on two servers joined to the same
domain, one with the cache of users' groups and details (the default)
and one without (--extauth-cache-ttl 0), each measured against the
other and against a local superuser's login in the same run.  Without
the cache every AD login looks the domain's controllers up in DNS,
opens a StartTLS connection, binds as the user, then as the host's
computer account for the account's state and the groups (tokenGroups);
with it, a user's further logins only bind as the user.
"""

import concurrent.futures
import os
import statistics
import time

import XenAPI

ITEM = "adlogin"
PASSWORD = "Be-nch-Pass1!"
CLIENTS = 4


def _login_seconds(url, user, password):
    session = XenAPI.Session(url, ignore_ssl=True)
    started = time.perf_counter()
    session.xenapi.login_with_password(user, password, "1.0", "bench")
    took = time.perf_counter() - started
    session.xenapi.session.logout()
    return took


def _concurrent_rate(url, user, password, n):
    """Logins per second of CLIENTS clients logging in at once."""
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda _: _login_seconds(url, user, password),
                      range(n)))
    return n / (time.perf_counter() - started)


def _joined_server(base, name, dc, extra_args=()):
    from tests.support import samba_dc
    from tests.support.servers import RunningServer
    # A host name of its own: each server has its own computer account.
    server = RunningServer(os.path.join(base, name, "data"), extra_args=(
        samba_dc.server_args(dc) + ["--simulator-hostname", "bench-" + name]
        + list(extra_args)))
    server.start()
    x = server.session().xenapi
    x.pool.enable_external_auth(x.pool.get_all()[0], samba_dc.ADMIN,
                                samba_dc.DOMAIN, "AD")
    subject = x.subject.create({
        "subject_identifier": x.auth.get_subject_identifier("outer"),
        "other_config": {}})
    x.subject.add_to_roles(subject, x.role.get_by_name_label("read-only")[0])
    return server


def _measure(url, n):
    first = _login_seconds(url, "bench", PASSWORD)
    each = [_login_seconds(url, "bench", PASSWORD) for _ in range(n)]
    return first, each, _concurrent_rate(url, "bench", PASSWORD, n)


def run(ctx):
    from tests.support import samba_dc
    from tests.support.servers import PASSWORD as ROOT_PASSWORD
    from tests.support.servers import USER
    if not samba_dc.available():
        ctx.results.unavailable(ITEM, "AD logins", "needs root and Samba")
        return
    n = 5 if ctx.quick else 40
    base = os.path.join(ctx.base, "adlogin")
    with samba_dc.running_dc(base, [("bench", PASSWORD)], [
            ("inner", ["bench"]), ("outer", ["inner"])]) as dc:
        servers = []
        try:
            for name, args in (("cached", ()),
                               ("uncached", ("--extauth-cache-ttl", "0"))):
                servers.append(_joined_server(base, name, dc, args))
            cached, uncached = [_measure(s.https_url, n) for s in servers]
            local = [_login_seconds(servers[0].https_url, USER,
                                    ROOT_PASSWORD) for _ in range(n)]
        finally:
            for server in servers:
                server.stop()
    add = ctx.results.add
    base_ms = statistics.median(local) * 1e3
    add(ITEM, "local superuser login, p50", base_ms, "ms")
    for label, (first, each, rate) in (("no cache", uncached),
                                       ("group cache", cached)):
        add(ITEM, "AD user login (nested group, %s), first after start"
            % label, first * 1e3, "ms", base_ms, "local superuser")
        add(ITEM, "AD user login (nested group, %s), p50" % label,
            statistics.median(each) * 1e3, "ms", base_ms, "local superuser")
        add(ITEM, "AD user login (nested group, %s), max" % label,
            max(each) * 1e3, "ms", max(local) * 1e3, "local superuser max")
    add(ITEM, "AD user logins/s, one client, group cache",
        1 / statistics.mean(cached[1]), "/s", 1 / statistics.mean(
            uncached[1]), "no cache")
    add(ITEM, "AD user logins/s, %d clients at once, group cache" % CLIENTS,
        cached[2], "/s", uncached[2], "no cache")
