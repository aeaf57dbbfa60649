"""
Item: logins of Active Directory users against a real Samba AD DC on a
loopback alias (needs root and Samba): session.login_with_password of a
user let in through a nested group, the first login after a start and
the following ones, each against a local superuser's login measured in
the same run on the same server.  Every AD login looks the domain's
controllers up in DNS, opens a StartTLS connection, binds as the user,
then as the host's computer account for the SID, the account's state
and the groups (tokenGroups).
"""

import os
import statistics
import time

import XenAPI

ITEM = "adlogin"
PASSWORD = "Be-nch-Pass1!"


def _login_seconds(url, user, password):
    session = XenAPI.Session(url, ignore_ssl=True)
    started = time.perf_counter()
    session.xenapi.login_with_password(user, password, "1.0", "bench")
    took = time.perf_counter() - started
    session.xenapi.session.logout()
    return took


def run(ctx):
    from tests.support import samba_dc
    from tests.support.servers import PASSWORD as ROOT_PASSWORD
    from tests.support.servers import USER
    if not samba_dc.available():
        ctx.results.unavailable(ITEM, "AD logins", "needs root and Samba")
        return
    n = 5 if ctx.quick else 40
    base = os.path.join(ctx.base, "adlogin")
    with samba_dc.serving(base, [("bench", PASSWORD)], [
            ("inner", ["bench"]), ("outer", ["inner"])]) as (_, server):
        x = server.session().xenapi
        x.pool.enable_external_auth(x.pool.get_all()[0], samba_dc.ADMIN,
                                    samba_dc.DOMAIN, "AD")
        subject = x.subject.create({
            "subject_identifier": x.auth.get_subject_identifier("outer"),
            "other_config": {}})
        x.subject.add_to_roles(subject,
                               x.role.get_by_name_label("read-only")[0])
        url = server.https_url
        first = _login_seconds(url, "bench", PASSWORD)
        ad = [_login_seconds(url, "bench", PASSWORD) for _ in range(n)]
        local = [_login_seconds(url, USER, ROOT_PASSWORD) for _ in range(n)]
    base_ms = statistics.median(local) * 1e3
    ctx.results.add(ITEM, "local superuser login, p50", base_ms, "ms")
    ctx.results.add(ITEM, "AD user login (nested group), first after start",
                    first * 1e3, "ms", base_ms, "local superuser")
    ctx.results.add(ITEM, "AD user login (nested group), p50",
                    statistics.median(ad) * 1e3, "ms", base_ms,
                    "local superuser")
    ctx.results.add(ITEM, "AD user login (nested group), max",
                    max(ad) * 1e3, "ms", max(local) * 1e3,
                    "local superuser max")
