"""
Operations in flight on an object: XAPI's current_operations /
allowed_operations bookkeeping.

Each class registers its rule (``rules``): which operations are valid on
an object now, and which it advertises.  ``begin`` checks one and records
``{key: op}`` in current_operations, ``end`` removes it, and both
recompute allowed_operations.  The forwarding layer marks calls with
them (txxapi/forwarding/marking.py), fail fast or waiting.
"""

from txxapi.values import new_uuid

# class name -> (checker(db, ref, op) -> XenAPIError | None,
#                advertiser(db, ref) -> [op, ...])
_RULES = {}


def rules(cls_name, checker, advertiser):
    _RULES[cls_name] = (checker, advertiser)


def key_for(ctx):
    """The current_operations key: the call's task, or a throwaway ref
    for a synchronous call (XAPI's DummyRef)."""
    return ctx.task or "DummyRef:|%s|" % new_uuid()


def check(ctx, cls_name, ref, op, strict=True):
    """XenAPIError unless ``op`` is valid on the object now.  Not
    ``strict`` (XAPI's forced operations): the rule leaves out the checks
    that depend on the guest's help (only VMs have such)."""
    checker = _RULES[cls_name][0]
    error = checker(ctx.db, ref, op) if strict else \
        checker(ctx.db, ref, op, strict=False)
    if error is not None:
        raise error


def refresh(db, cls_name, ref):
    """Recompute an object's allowed_operations."""
    if cls_name in _RULES and db.exists(cls_name, ref):
        allowed = _RULES[cls_name][1](db, ref)
        if allowed != db.fields(cls_name, ref)["allowed_operations"]:
            db.update(cls_name, ref, {"allowed_operations": allowed})


def begin(ctx, cls_name, ref, op, strict=True):
    check(ctx, cls_name, ref, op, strict)
    key = key_for(ctx)
    current = dict(ctx.db.fields(cls_name, ref)["current_operations"])
    current[key] = op
    ctx.db.update(cls_name, ref, {"current_operations": current})
    refresh(ctx.db, cls_name, ref)
    return key


def end(db, cls_name, ref, key):
    if not db.exists(cls_name, ref):
        return  # the operation destroyed its object
    current = dict(db.fields(cls_name, ref)["current_operations"])
    if current.pop(key, None) is not None:
        db.update(cls_name, ref, {"current_operations": current})
    refresh(db, cls_name, ref)
