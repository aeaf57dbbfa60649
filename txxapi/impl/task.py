"""task.*: client-owned tasks, cancellation and destruction."""

from txxapi.api.registry import implements
from txxapi.datamodel.permissions import TASK_DESTROY_ANY
from txxapi.errors import XenAPIError


def _assert_own(ctx, ref):
    """Own tasks only, unless the caller may act on any task."""
    session = ctx.session_fields()
    task_session = ctx.db.fields("task", ref)["session"]
    if session["is_local_superuser"] or task_session == ctx.session:
        return
    owner = ctx.db.fields("session", task_session)["auth_user_sid"] \
        if ctx.db.exists("session", task_session) else None
    if owner is not None and owner == session["auth_user_sid"]:
        return
    ctx.server.sessions.permissions.check(ctx.session, TASK_DESTROY_ANY)


@implements("task.create")
def create(ctx, label, description):
    return ctx.server.tasks.create(ctx.session, label, description,
                                   subtask_of=ctx.task or "OpaqueRef:NULL")


@implements("task.destroy")
def destroy(ctx, self):
    ctx.db.fields("task", self)
    _assert_own(ctx, self)
    ctx.server.tasks.destroy(self)
    return ""


@implements("task.cancel")
def cancel(ctx, task):
    fields = ctx.db.fields("task", task)
    _assert_own(ctx, task)
    if fields["status"] != "pending" or (
            "cancel" not in fields["allowed_operations"]
            and fields["session"] != ctx.session):
        raise XenAPIError("OPERATION_NOT_ALLOWED",
                          "task %s is not cancellable" % task)
    ctx.server.tasks.cancel(task, by=ctx.task or "")
    return ""


def _setter(field):
    def set_field(ctx, self, value):
        ctx.db.fields("task", self)
        _assert_own(ctx, self)
        ctx.db.update("task", self, {field: value})
        return ""
    return set_field


for _field in ("status", "progress", "result", "error_info"):
    implements("task.set_" + _field)(_setter(_field))
