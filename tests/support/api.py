"""Small helpers for tests that drive a server with the XenAPI SDK."""

import time

import pytest
import XenAPI


def failure(fn, *args, **kw):
    """The error description of a call that must fail."""
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args, **kw)
    return e.value.details


def wait_until(check, timeout=20.0, what="condition", interval=0.1):
    """The first true value of ``check()``, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    pytest.fail("timed out waiting for %s" % what)
