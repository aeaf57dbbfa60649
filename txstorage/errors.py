"""
Storage errors, numbered like the SM backends' error table so the toolstack
can turn them into the XenAPI errors xapi would raise.

xapi maps an SM fault code to a XenAPI error as follows: 16 SR_DEVICE_IN_USE,
24 VDI_IN_USE, 38 "not implemented", 39 SR_NOT_EMPTY, 144 VDI_MISSING, and any
other code N to SR_BACKEND_FAILURE_<N> with params ["", reason, stderr].
StorageError.xapi_error() applies that rule; subclasses with a dedicated
XenAPI error override it.
"""

# name -> (code, default reason), the subset of the SM error table we raise.
SM_ERRORS = {
    "InvalidArg": (1, "Invalid argument"),
    "SRInUse": (16, "The SR device is currently in use"),
    "VDIInUse": (24, "The VDI is currently in use"),
    "Unimplemented": (38, "The requested method is not supported/implemented"),
    "SRNotEmpty": (39, "The SR is not empty"),
    "SRScan": (40, "The SR scan failed"),
    "SRExists": (42, "The SR already exists"),
    "VDIExists": (43, "The VDI already exists"),
    "SRNoSpace": (44, "There is insufficient space"),
    "VDIUnavailable": (46, "The VDI is not available"),
    "SRUnavailable": (47, "The SR is not available"),
    "FileSRCreate": (61, "File SR creation error"),
    "FileSRDelete": (63, "File SR deletion error"),
    "VDILoad": (65, "Failed to load VDI"),
    "VDICreate": (78, "VDI Creation failed"),
    "VDISize": (79, "VDI Invalid size"),
    "VDIDelete": (80, "Failed to mark VDI hidden"),
    "VDIClone": (81, "Failed to clone VDI"),
    "VDISnapshot": (82, "Failed to snapshot VDI"),
    "ConfigLocationMissing": (94, "The request is missing the location "
                                  "parameter"),
    "SnapshotChainTooLong": (109, "The snapshot chain is too long"),
    "VDIResize": (110, "VDI resize failed"),
    "VDIMissing": (144, "VDI could not be found"),
    "SMGeneral": (202, "General backend error"),
    "ISOMountFailure": (222, "Could not mount the directory specified in "
                             "Device Configuration"),
}


class StorageError(Exception):
    """A driver failure.

    code: the SM numeric code (int) or None when there is no SM equivalent.
    name: the SM short name ("SRNoSpace"), for logs.
    message: what went wrong (SM's "opterr"); stderr: captured tool output.
    """

    def __init__(self, code, message="", stderr="", name=None):
        self.code = code
        self.name = name or _name_of(code)
        self.message = message
        self.stderr = stderr
        Exception.__init__(self, code, message, stderr)

    @classmethod
    def named(cls, name, message="", stderr=""):
        code, reason = SM_ERRORS[name]
        text = "%s [opterr=%s]" % (reason, message) if message else reason
        return cls(code, text, stderr, name=name)

    @property
    def xapi_code(self):
        if self.code is None:
            return "SR_BACKEND_FAILURE"
        return "SR_BACKEND_FAILURE_%d" % self.code

    def xapi_error(self, sr="", vdi=""):
        """(code, params) as xapi reports this failure; sr/vdi are the
        references of the call, used by errors that name them."""
        return self.xapi_code, ["", self.message, self.stderr]

    def __str__(self):
        text = "%s: %s" % (self.xapi_code, self.message)
        if self.stderr:
            text += " (%s)" % self.stderr.strip()
        return text


def _name_of(code):
    for name, (c, _) in SM_ERRORS.items():
        if c == code:
            return name
    return None


def _err(name, message, stderr=""):
    code, reason = SM_ERRORS[name]
    return code, (message or reason), stderr


class SRFull(StorageError):
    """Not enough space for an allocation; sizes in bytes."""

    def __init__(self, needed, available, message=""):
        self.needed = int(needed)
        self.available = int(available)
        message = message or ("insufficient space: %d bytes needed, %d "
                              "available" % (self.needed, self.available))
        StorageError.__init__(self, *_err("SRNoSpace", message),
                              name="SRNoSpace")

    def xapi_error(self, sr="", vdi=""):
        return "SR_FULL", [str(self.needed), str(self.available)]


class VDIInUse(StorageError):
    def __init__(self, vdi_uuid, operation="", message=""):
        self.vdi_uuid = vdi_uuid
        self.operation = operation
        StorageError.__init__(self, *_err(
            "VDIInUse", message or "VDI %s is in use" % vdi_uuid),
            name="VDIInUse")

    def xapi_error(self, sr="", vdi=""):
        return "VDI_IN_USE", [vdi or self.vdi_uuid, self.operation]


class VDIMissing(StorageError):
    def __init__(self, sr_uuid, vdi_uuid, message=""):
        self.sr_uuid = sr_uuid
        self.vdi_uuid = vdi_uuid
        StorageError.__init__(self, *_err(
            "VDIMissing",
            message or "VDI %s not found in SR %s" % (vdi_uuid, sr_uuid)),
            name="VDIMissing")

    def xapi_error(self, sr="", vdi=""):
        return "VDI_MISSING", [sr or self.sr_uuid, vdi or self.vdi_uuid]


class SRNotEmpty(StorageError):
    def __init__(self, sr_uuid, message=""):
        self.sr_uuid = sr_uuid
        StorageError.__init__(self, *_err(
            "SRNotEmpty", message or "VDIs still exist in SR %s" % sr_uuid),
            name="SRNotEmpty")

    def xapi_error(self, sr="", vdi=""):
        return "SR_NOT_EMPTY", []


class SRInUse(StorageError):
    def __init__(self, sr_uuid, message=""):
        self.sr_uuid = sr_uuid
        StorageError.__init__(self, *_err(
            "SRInUse", message or "SR %s has attached VDIs" % sr_uuid),
            name="SRInUse")

    def xapi_error(self, sr="", vdi=""):
        return "SR_DEVICE_IN_USE", []


class Unimplemented(StorageError):
    def __init__(self, operation):
        self.operation = operation
        StorageError.__init__(self, *_err(
            "Unimplemented", "%s is not supported by this driver"
            % operation), name="Unimplemented")

    def xapi_error(self, sr="", vdi=""):
        return "SR_OPERATION_NOT_SUPPORTED", [sr]


class VDIIsAPhysicalDevice(StorageError):
    """The VDI is a device/library file the driver cannot modify."""

    def __init__(self, vdi_uuid, message=""):
        self.vdi_uuid = vdi_uuid
        StorageError.__init__(
            self, None,
            message or "VDI %s is a physical device" % vdi_uuid,
            name="VDIIsAPhysicalDevice")

    def xapi_error(self, sr="", vdi=""):
        return "VDI_IS_A_PHYSICAL_DEVICE", [vdi or self.vdi_uuid]
