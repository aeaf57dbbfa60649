"""
network.add_purpose / remove_purpose: what the NBD server reads to decide
whether it serves with TLS (purpose nbd) or without (insecure_nbd).  The
two exclude each other across the whole pool, as in XAPI.
"""

from txxapi.api.registry import implements
from txxapi.errors import XenAPIError

# A purpose and the one no network may hold alongside it.
_CONFLICTS = {"nbd": "insecure_nbd", "insecure_nbd": "nbd"}


@implements("network.add_purpose")
def add_purpose(ctx, self, value):
    db = ctx.db
    fields = db.fields("network", self)
    if not fields["managed"]:
        raise XenAPIError("NETWORK_UNMANAGED", self)
    current = list(fields["purpose"])
    if value in current:
        return ""
    bad = _CONFLICTS[value]
    for network in db.refs("network"):
        if bad in db.fields("network", network)["purpose"]:
            raise XenAPIError("NETWORK_INCOMPATIBLE_PURPOSES", value, bad)
    db.update("network", self, {"purpose": [value] + current})
    return ""


@implements("network.remove_purpose")
def remove_purpose(ctx, self, value):
    db = ctx.db
    current = db.fields("network", self)["purpose"]
    if value in current:
        db.update("network", self,
                  {"purpose": [p for p in current if p != value]})
    return ""
