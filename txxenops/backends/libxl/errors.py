"""
libxl error codes as Python exceptions.

libxl functions return 0 or a negative ERROR_* code and say what went wrong
only through the logger; ``ffi.call`` collects the warnings and errors
logged on the calling thread during the call, and ``error_for`` turns the
code plus those messages into an exception the toolstack can map.
"""

from txxenops.errors import DomainNotFound, XenopsError

# enum libxl_error (libxl 4.17, _libxl_types.h).
NAMES = {
    -1: "NONSPECIFIC", -2: "VERSION", -3: "FAIL", -4: "NI", -5: "NOMEM",
    -6: "INVAL", -7: "BADFAIL", -8: "GUEST_TIMEDOUT", -9: "TIMEDOUT",
    -10: "NOPARAVIRT", -11: "NOT_READY", -12: "OSEVENT_REG_FAIL",
    -13: "BUFFERFULL", -14: "UNKNOWN_CHILD", -15: "LOCK_FAIL",
    -16: "JSON_CONFIG_EMPTY", -17: "DEVICE_EXISTS",
    -18: "CHECKPOINT_DEVOPS_DOES_NOT_MATCH",
    -19: "CHECKPOINT_DEVICE_NOT_SUPPORTED", -20: "VNUMA_CONFIG_INVALID",
    -21: "DOMAIN_NOTFOUND", -22: "ABORTED", -23: "NOTFOUND",
    -24: "DOMAIN_DESTROYED", -25: "FEATURE_REMOVED",
    -26: "PROTOCOL_ERROR_QMP", -27: "UNKNOWN_QMP_ERROR",
    -28: "QMP_GENERIC_ERROR", -29: "QMP_COMMAND_NOT_FOUND",
    -30: "QMP_DEVICE_NOT_ACTIVE", -31: "QMP_DEVICE_NOT_FOUND",
    -32: "QEMU_API",
}
CODES = {name: code for code, name in NAMES.items()}

ERROR_FAIL = CODES["FAIL"]
ERROR_NOMEM = CODES["NOMEM"]
ERROR_INVAL = CODES["INVAL"]
ERROR_GUEST_TIMEDOUT = CODES["GUEST_TIMEDOUT"]
ERROR_TIMEDOUT = CODES["TIMEDOUT"]
ERROR_NOPARAVIRT = CODES["NOPARAVIRT"]
ERROR_BUFFERFULL = CODES["BUFFERFULL"]
ERROR_DOMAIN_NOTFOUND = CODES["DOMAIN_NOTFOUND"]
ERROR_DOMAIN_DESTROYED = CODES["DOMAIN_DESTROYED"]
ERROR_NOTFOUND = CODES["NOTFOUND"]

# Codes meaning "that domain is not there (any more)".
GONE = (ERROR_DOMAIN_NOTFOUND, ERROR_DOMAIN_DESTROYED)
# How many logged lines an exception keeps.
MAX_MESSAGES = 8


def code_name(rc):
    return "ERROR_" + NAMES.get(rc, "UNKNOWN(%d)" % rc)


class LibxlError(XenopsError):
    """A libxl call failed.  ``messages`` are what libxl logged (warnings
    and errors) on the calling thread during the call, oldest first."""

    def __init__(self, function, rc, messages=()):
        messages = tuple(messages)[-MAX_MESSAGES:]
        super().__init__(function, rc, messages)
        self.function = function
        self.rc = rc
        self.messages = messages

    def describe(self):
        text = "%s failed: %s (%d)" % (
            self.function, code_name(self.rc), self.rc)
        if self.messages:
            text += ": " + " | ".join(self.messages)
        return text


def error_for(function, rc, messages=(), uuid=None):
    """The exception for a failed call: DomainNotFound when the call was
    about the domain of VM ``uuid`` and libxl says it is gone, else
    LibxlError."""
    if uuid is not None and rc in GONE:
        return DomainNotFound(uuid)
    return LibxlError(function, rc, messages)
