"""
What every part of the storage component shares: how a driver's errors
become XAPI's, the SM features of an SR type, the operation rules of the
storage classes, and the claims (every use of a VDI's data on this host),
which those rules read.
"""

from twisted.logger import Logger

from txstorage.errors import StorageError
from txxapi import operations
from txxapi.errors import XenAPIError

log = Logger()



# Every use of a VDI's data on this host, from the moment it is asked for
# until it is released: VDI ref -> {key: writable}, the key a VBD ref or a
# data path's name.  The VDI operation rules see only the database, so
# they read this too.
CLAIMS = {}


def xapi_error(error, sr="", vdi=""):
    """A driver's StorageError as the XenAPIError XAPI reports."""
    code, params = error.xapi_error(sr, vdi)
    return XenAPIError(code, *params)


def translate(failure, sr="", vdi=""):
    """Errback: a driver failure as the XenAPI error XAPI reports."""
    if failure.check(StorageError):
        raise xapi_error(failure.value, sr, vdi)
    return failure


def sm_features(db, sm_type):
    """Capability names the SM record of an SR type advertises."""
    for ref in db.where("SM", type=sm_type):
        return set(db.fields("SM", ref)["features"])
    return set()


def register_rules(cls_name, error, ops):
    """Operation rules of a storage class: ``error(db, ref, op)`` checks
    one operation, and allowed_operations lists the ``ops`` it passes."""
    def advertise(db, ref):
        return [op for op in ops if error(db, ref, op) is None]
    operations.rules(cls_name, error, advertise)


def data_path_users(db, vdi):
    """(writable, key) of everything using the VDI's data now: attached
    VBDs of live VMs, and claims.  (A Suspended VM's VBDs stay attached
    until it resumes, but nothing of it reads or writes meanwhile.)"""
    users = {}
    for vbd in db.where("VBD", VDI=vdi):
        f = db.fields("VBD", vbd)
        if f["currently_attached"] and db.exists("VM", f["VM"]) and \
                db.fields("VM", f["VM"])["power_state"] != "Suspended":
            users[vbd] = f["mode"] == "RW"
    users.update(CLAIMS.get(vdi, {}))
    return [(w, key) for key, w in users.items()]

