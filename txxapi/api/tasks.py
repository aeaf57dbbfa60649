"""
Tasks: the record of an asynchronous call (and of client-owned transfers).

An Async call creates a pending task, runs the call, and finishes the task
with the result encoded as an XML-RPC <value> fragment (XAPI's encoding,
also for JSON-RPC clients) or with the error description.  Cancellation is
cooperative: task.cancel marks the task, and the operation raises
TASK_CANCELLED at its next check point (Context.check_cancelled), or its
registered canceller interrupts what it waits on.  Finished tasks expire
after 65 minutes, and the oldest finished ones go when there are too many.
"""

import time

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from txxapi.api.expiry import Expiring
from txxapi.db.memory import RecordMap
from txxapi.errors import XenAPIError
from txxapi.interfaces import ITasks
from txxapi.values import EPOCH, NULL_REF, DateTime
from txxapi.wire.xmlrpc import encode_value

log = Logger()

COMPLETED_TIMEOUT = 3900   # s after finishing
PENDING_TIMEOUT = 86400
MAX_TASKS = 200
GC_INTERVAL = 60
FINISHED = ("success", "failure", "cancelled")


@implementer(ITasks)
class TaskManager(Expiring):
    interval = GC_INTERVAL

    def __init__(self, db, identity, clock=None):
        self.db = db
        self.identity = identity
        self.clock = clock
        self._cancellers = {}    # task ref -> callable
        self._destroy_when_done = set()


    def create(self, session, label, description="", subtask_of=NULL_REF,
               ref=None):
        """``ref``: the ref the task takes (a call forwarded from the
        master runs under the master's task ref)."""
        return self.db.create("task", {
            "name_label": label,
            "name_description": description,
            "status": "pending",
            "progress": 0.0,
            "created": DateTime.now(),
            "finished": EPOCH,
            "resident_on": self.identity.host_ref,
            "session": session or NULL_REF,
            "subtask_of": subtask_of,
            "backtrace": "()",
        }, ref=ref)

    def run_async(self, ctx, label, thunk):
        """Create the task, start ``thunk`` under it, return the task ref."""
        ref = self.create(ctx.session, label)
        ctx.task = ref
        d = defer.maybeDeferred(thunk)
        d.addCallbacks(lambda result: self.succeed(ref, result),
                       lambda f: self.fail_from(ref, f))
        d.addErrback(lambda f: log.failure("finishing task {ref}", f,
                                           ref=ref))
        return ref

    def under_own_task(self, ctx, label, run, ref=None,
                       subtask_of=NULL_REF):
        """``run()`` (a Deferred) under a task made for it, as ctx.task,
        taken away once it is over: a call its client gave no task gets
        one, so that task.cancel can end it.  ``ref``: the ref it takes
        (a forwarded call's, the master's); ``subtask_of``: the task of
        the call it is a step of."""
        ctx.task = self.create(ctx.session, label, subtask_of=subtask_of,
                               ref=ref)

        def over(result):
            self.clear_canceller(ctx.task)
            if self.db.exists("task", ctx.task):
                self.db.delete("task", ctx.task)
            return result
        return defer.maybeDeferred(run).addBoth(over)

    # -- progress and outcome --------------------------------------------------

    def set_progress(self, ref, fraction):
        if self.db.exists("task", ref):
            self.db.update("task", ref, {"progress": float(fraction)})

    def succeed(self, ref, result):
        if isinstance(result, RecordMap):
            result = result.to_dict()
        self._finish(ref, {"status": "success", "progress": 1.0,
                           "result": encode_value(result)})

    def fail(self, ref, error):
        status = "cancelled" if error.code == "TASK_CANCELLED" else "failure"
        self._finish(ref, {"status": status, "progress": 1.0,
                           "error_info": error.description})

    def fail_from(self, ref, failure):
        if failure.check(XenAPIError):
            self.fail(ref, failure.value)
        elif failure.check(defer.CancelledError):
            self.fail(ref, XenAPIError("TASK_CANCELLED", ref))
        else:
            log.failure("task {ref} failed unexpectedly", failure, ref=ref)
            self.fail(ref, XenAPIError("INTERNAL_ERROR",
                                       failure.getErrorMessage()))

    def finish_as(self, ref, status, result="", error_info=()):
        """Finish with an outcome reached on another host (one that served
        a transfer under this task), ``result`` already encoded."""
        self._finish(ref, {"status": status, "progress": 1.0,
                           "result": result, "error_info": list(error_info)})

    def _finish(self, ref, changes):
        self._cancellers.pop(ref, None)
        if not self.db.exists("task", ref):
            return
        if self.db.fields("task", ref)["status"] in FINISHED:
            return  # a task leaves pending once only
        changes.update(finished=DateTime.now(), allowed_operations=[],
                       current_operations={})
        self.db.update("task", ref, changes)
        if ref in self._destroy_when_done:
            self._destroy_when_done.discard(ref)
            self.db.delete("task", ref)

    # -- cancellation ------------------------------------------------------------

    def set_canceller(self, ref, canceller):
        """Make a pending task cancellable by calling ``canceller``."""
        if ref is None or not self.db.exists("task", ref):
            return
        self._cancellers[ref] = canceller
        self.db.update("task", ref, {"allowed_operations": ["cancel"]})

    def clear_canceller(self, ref):
        if ref is not None and self._cancellers.pop(ref, None) is not None \
                and self.db.exists("task", ref):
            self.db.update("task", ref, {"allowed_operations": []})

    def cancel(self, ref, by=""):
        fields = self.db.fields("task", ref)
        if fields["status"] != "pending":
            return
        self.db.update("task", ref, {
            "status": "cancelling",
            "current_operations": {by or ref: "cancel"}})
        canceller = self._cancellers.pop(ref, None)
        if canceller is not None:
            canceller()

    def check_cancelled(self, ref):
        if self.db.exists("task", ref) and \
                self.db.fields("task", ref)["status"] == "cancelling":
            raise XenAPIError("TASK_CANCELLED", ref)

    # -- destruction and expiry --------------------------------------------------

    def destroy(self, ref):
        if not self.db.exists("task", ref):
            return
        if self.db.fields("task", ref)["status"] in FINISHED:
            self.db.delete("task", ref)
        else:
            self._destroy_when_done.add(ref)

    def expire(self, now=None):
        now = time.time() if now is None else now
        finished = []
        for ref, row in list(self.db.table("task").rows.items()):
            f = row.fields
            if f["status"] in FINISHED:
                age = now - f["finished"].timestamp()
                if age > COMPLETED_TIMEOUT:
                    self.db.delete("task", ref)
                else:
                    finished.append((f["finished"], ref))
            elif now - f["created"].timestamp() > PENDING_TIMEOUT:
                self.db.delete("task", ref)
        excess = self.db.count("task") - MAX_TASKS
        if excess > 0:
            finished.sort()
            for _, ref in finished[:excess]:
                self.db.delete("task", ref)
