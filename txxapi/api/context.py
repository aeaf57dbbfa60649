"""
The context one API call runs in: who called (session), on which server,
under which task, and the message being served.
"""


class Context:
    __slots__ = ("server", "db", "session", "message", "task", "origin",
                 "reply")

    def __init__(self, server, session=None, message=None, task=None,
                 origin=None):
        self.server = server
        self.db = server.db
        self.session = session  # session ref, or None before login
        self.message = message
        self.task = task        # task ref of an Async call, else None
        self.origin = origin    # transport facts: peer address, tls
        # The caller's reply (txxapi.replies) for an implementation that
        # answers later through it; None where a Deferred is wanted.
        self.reply = None

    def session_fields(self):
        return self.db.fields("session", self.session)

    def check_cancelled(self):
        """Raise TASK_CANCELLED at a safe point if the task was cancelled."""
        if self.task is not None:
            self.server.tasks.check_cancelled(self.task)
