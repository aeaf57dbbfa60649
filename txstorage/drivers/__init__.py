"""The storage drivers, by SR type."""

from txstorage.drivers.file import FileSRDriver
from txstorage.drivers.iso import ISOSRDriver
from txstorage.drivers.shared_file import SharedFileSRDriver
from txstorage.drivers.udev import UdevSRDriver

DRIVERS = {cls.sm_type: cls
           for cls in (FileSRDriver, ISOSRDriver, SharedFileSRDriver,
                       UdevSRDriver)}

__all__ = ["DRIVERS", "FileSRDriver", "ISOSRDriver", "SharedFileSRDriver",
           "UdevSRDriver"]
