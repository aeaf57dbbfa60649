"""
Failures a txxenops backend reports.  The toolstack maps them to XenAPI
errors (e.g. NotEnoughMemory -> HOST_NOT_ENOUGH_FREE_MEMORY, BadDomainState
-> VM_BAD_POWER_STATE, ShutdownTimeout -> VM_SHUTDOWN_TIMEOUT, Cancelled ->
TASK_CANCELLED), so each carries its parameters as attributes.  ``args``
mirror the constructor so that the exceptions pickle.
"""


class XenopsError(Exception):
    def __init__(self, *args):
        super().__init__(*args)

    def __str__(self):
        return self.describe()

    def describe(self):
        return " ".join(str(a) for a in self.args) or type(self).__name__


class NotEnoughMemory(XenopsError):
    def __init__(self, needed, available):
        super().__init__(needed, available)
        self.needed = needed
        self.available = available

    def describe(self):
        return "not enough free memory: needed %d bytes, %d available" % (
            self.needed, self.available)


class DomainNotFound(XenopsError):
    def __init__(self, uuid):
        super().__init__(uuid)
        self.uuid = uuid

    def describe(self):
        return "no domain for VM %s" % self.uuid


class BadDomainState(XenopsError):
    """``expected`` and ``actual`` are domain states ('running', 'paused',
    'shutdown', 'crashed', 'dying') or 'halted' for "no domain"."""
    def __init__(self, uuid, expected, actual):
        super().__init__(uuid, expected, actual)
        self.uuid = uuid
        self.expected = expected
        self.actual = actual

    def describe(self):
        return "domain of VM %s is %s, expected %s" % (
            self.uuid, self.actual, self.expected)


class ShutdownTimeout(XenopsError):
    """The guest did not complete a clean shutdown or reboot in time; its
    domain is left as it was."""
    def __init__(self, uuid, timeout):
        super().__init__(uuid, timeout)
        self.uuid = uuid
        self.timeout = timeout

    def describe(self):
        return "VM %s did not shut down within %gs" % (self.uuid, self.timeout)


class SuspendTimeout(ShutdownTimeout):
    def describe(self):
        return "VM %s did not suspend within %gs" % (self.uuid, self.timeout)


class Cancelled(XenopsError):
    def __init__(self, uuid=""):
        super().__init__(uuid)
        self.uuid = uuid

    def describe(self):
        return "operation on VM %s cancelled" % self.uuid


class BackendUnavailable(XenopsError):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason

    def describe(self):
        return self.reason


class DeviceError(XenopsError):
    def __init__(self, uuid, device, reason):
        super().__init__(uuid, device, reason)
        self.uuid = uuid
        self.device = device
        self.reason = reason

    def describe(self):
        return "VM %s device %s: %s" % (self.uuid, self.device, self.reason)


class InvalidSpec(XenopsError):
    """The VMSpec (or a parameter such as a vCPU count) is inconsistent."""
    def __init__(self, uuid, reason):
        super().__init__(uuid, reason)
        self.uuid = uuid
        self.reason = reason

    def describe(self):
        return "VM %s: %s" % (self.uuid, self.reason)


class ImageError(XenopsError):
    """A suspend image or migration stream is unreadable or not for this
    VM."""
    def __init__(self, uuid, reason):
        super().__init__(uuid, reason)
        self.uuid = uuid
        self.reason = reason

    def describe(self):
        return "VM %s: bad image: %s" % (self.uuid, self.reason)


class MigrationError(XenopsError):
    """The peer failed or went away; the source domain is left as it was
    before the migration started."""
    def __init__(self, uuid, reason):
        super().__init__(uuid, reason)
        self.uuid = uuid
        self.reason = reason

    def describe(self):
        return "migration of VM %s failed: %s" % (self.uuid, self.reason)
