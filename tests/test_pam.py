"""
PAM for real: a throw-away local account and a PAM service file of the
test's own, a server started with --auth pam, and logins through it.
Needs root (to add the account and the service file).
"""

import os
import subprocess
import uuid

import pytest
import XenAPI

from tests.support.servers import RunningServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="creating a PAM account needs root")


@pytest.fixture
def pam_account():
    user = "txpam%s" % uuid.uuid4().hex[:8]
    service = "txxapi-test-%s" % uuid.uuid4().hex[:8]
    password = "Pam-%s" % uuid.uuid4().hex
    service_file = os.path.join("/etc/pam.d", service)
    subprocess.run(["useradd", "--no-create-home", "--shell",
                    "/usr/sbin/nologin", user], check=True)
    try:
        subprocess.run(["chpasswd"], input="%s:%s\n" % (user, password),
                       text=True, check=True)
        with open(service_file, "w") as f:
            f.write("auth required pam_unix.so\n"
                    "account required pam_unix.so\n")
        yield user, password, service
    finally:
        if os.path.exists(service_file):
            os.unlink(service_file)
        subprocess.run(["userdel", user], check=False)


def test_pam_login(tmp_path, pam_account):
    user, password, service = pam_account
    s = RunningServer(str(tmp_path / "data"),
                      extra_args=["--auth", "pam", "--pam-service", service])
    s.start()
    try:
        session = XenAPI.Session(s.https_url, ignore_ssl=True)
        session.xenapi.login_with_password(user, password, "1.0", "pam")
        ref = session._session
        assert session.xenapi.session.get_auth_user_name(ref) == user
        assert session.xenapi.session.get_is_local_superuser(ref) is True
        session.xenapi.session.logout()

        bad = XenAPI.Session(s.http_url)
        with pytest.raises(XenAPI.Failure) as e:
            bad.xenapi.login_with_password(user, "not-" + password,
                                           "1.0", "pam")
        assert e.value.details[:2] == ["SESSION_AUTHENTICATION_FAILED", user]
    finally:
        s.stop()
