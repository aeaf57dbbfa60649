"""
XenAPIError: the one exception that becomes a Failure envelope on the wire.

Its description is the error code followed by string parameters, in the
order the datamodel's error table gives.  Anything else raised below
dispatch becomes INTERNAL_ERROR.
"""


class XenAPIError(Exception):
    def __init__(self, code, *params):
        Exception.__init__(self, code, *params)
        self.code = code
        self.params = [p if isinstance(p, str) else str(p) for p in params]

    @property
    def description(self):
        return [self.code] + self.params

    def __str__(self):
        return " ".join(self.description)


def handle_invalid(cls, ref):
    return XenAPIError("HANDLE_INVALID", cls, ref)


def uuid_invalid(cls, uuid):
    return XenAPIError("UUID_INVALID", cls, uuid)


def not_implemented(what):
    return XenAPIError("NOT_IMPLEMENTED", what)


def invalid_value(field, value):
    return XenAPIError("INVALID_VALUE", field, value)
