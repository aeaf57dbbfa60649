"""
The server's parts, named.  Each part is built from the collaborators it
uses (given in its constructor), never from the whole Server, so that any
of them can be built alone in a test or replaced: a remote database, a
forwarder that sends calls to other hosts of a pool.  The Server
(txxapi.server) only wires them together; ``ctx.server`` is how an
implementation reaches them.
"""

from zope.interface import Attribute, Interface


class IHostIdentity(Interface):
    """Who this host is in its pool (known once the database is open)."""

    host_ref = Attribute("this host's ref")
    pool_ref = Attribute("its pool's ref")
    pool_secret = Attribute("the secret the pool's hosts prove themselves "
                            "with")
    data_dir = Attribute("where this host keeps its state")
    bind = Attribute("the address it listens on, '' for all")
    role = Attribute("its role in the pool (txxapi.pool.role.Role)")
    master_listeners = Attribute("callables called, without arguments, "
                                 "when the pool's master changes")

    def assert_master():
        """Raise HOST_IS_SLAVE on a slave."""

    def assert_not_emergency(wire_name):
        """Raise the emergency error for a call a slave in emergency mode
        does not serve."""


class IDatabase(Interface):
    """The object store (txxapi.db.memory.Database)."""

    generation = Attribute("the generation of the last change")

    def fields(cls, ref):
        """An object's fields, HANDLE_INVALID if there is none."""

    def create(cls, fields):
        """A new object's ref."""

    def update(cls, ref, fields):
        """Change fields of an object."""

    def delete(cls, ref):
        """Remove an object."""


class IPersistence(Interface):
    """Where the database survives a restart (snapshot and redo log)."""

    def open(db):
        """Load ``db`` (a Deferred)."""

    def is_durable(generation):
        """Whether ``generation`` is on disk already: a caller that asks
        first needs no Deferred for what is durable (every reply to a
        batch of woken watchers after the first)."""

    def wait_durable(generation):
        """A Deferred that fires once ``generation`` is on disk (at once,
        already fired, when is_durable says so)."""

    def snapshot():
        """Write a full snapshot now (a Deferred)."""

    def close():
        """Flush and close (a Deferred)."""


class IForwarder(Interface):
    """Runs a call as its forwarding rule says: where, with what marks."""

    def execute(ctx, implementation, args):
        """The call's result or a Deferred of it."""


class IXenopsBridge(Interface):
    """The VM backend on its thread pool, in step with the database."""

    def vm_op(vm, operation, *args, **kw):
        """Run a domain operation (a Deferred)."""

    def vm_change(vm, run, **kw):
        """Run ``run()``, several steps, as one domain operation (a
        Deferred)."""


class IStorageBridge(Interface):
    """The storage drivers on their thread pool, in step with the
    database."""

    def run(fn, *args, **kw):
        """Run blocking storage work (a Deferred)."""


class ITasks(Interface):
    """Tasks of asynchronous calls, their progress and cancellation."""

    def create(session, label, description="", subtask_of=None):
        """A new pending task's ref."""

    def run_async(ctx, name, call):
        """Run ``call`` as a task; the task's ref."""


class IEvents(Interface):
    """event.from and event.next over the database's changes."""

    def event_from(session, classes, token, timeout, reply=None):
        """A Deferred of the changes since ``token``; given a reply
        (txxapi.replies), they are answered through it and ANSWERED is
        returned."""


class ISessions(Interface):
    """Logins, sessions and their expiry."""

    def check(session):
        """Raise SESSION_INVALID unless ``session`` is a live session."""


class IMessages(Interface):
    """XAPI's messages (alerts), kept beside the database."""

    def create(name, priority, cls, obj_uuid, body):
        """A new message's ref."""


class IDispatcher(Interface):
    """From a decoded call to its result: checks, then forwarding."""

    def call(name, params, origin=None):
        """A Deferred of the call's result."""


class IComponent(Interface):
    """A part with a lifetime inside the server's core."""

    def start():
        """Start (a value or a Deferred)."""

    def stop():
        """Stop (a value or a Deferred)."""
