"""
The compiled libxl binding (``_libxl``, built by _build.py) and the Python
side of its callbacks.

Callbacks from C (the logger, libxl's event hooks) must never raise: an
exception cannot cross into libxl, so each one catches everything and logs
it.  cffi releases the GIL around every call into C, so a blocking libxl
call holds up only its own thread.
"""

import logging
import os
import threading

from txxenops.backends.libxl._libxl import ffi, lib  # noqa: F401
from txxenops.backends.libxl.errors import error_for

log = logging.getLogger("txxenops.libxl")

# enum xentoollog_level
XTL_DEBUG, XTL_VERBOSE, XTL_DETAIL, XTL_PROGRESS, XTL_INFO, XTL_NOTICE, \
    XTL_WARN, XTL_ERROR, XTL_CRITICAL = range(1, 10)
_PY_LEVELS = {XTL_DEBUG: logging.DEBUG, XTL_VERBOSE: logging.DEBUG,
              XTL_DETAIL: logging.DEBUG, XTL_PROGRESS: logging.INFO,
              XTL_INFO: logging.INFO, XTL_NOTICE: logging.INFO,
              XTL_WARN: logging.WARNING, XTL_ERROR: logging.ERROR,
              XTL_CRITICAL: logging.CRITICAL}

_capture = threading.local()


def text(cstr, default=""):
    """A Python str from a C string (NULL gives ``default``)."""
    if cstr == ffi.NULL:
        return default
    return ffi.string(cstr).decode("utf-8", "replace")


def take_string(cstr):
    """Like text() for a string libxl allocated for us, which is freed."""
    try:
        return text(cstr, None)
    finally:
        if cstr != ffi.NULL:
            lib.free(cstr)


def set_log_level(level):
    """Forward libxl messages from this xentoollog level up."""
    lib.txx_log_min_level = level


if os.environ.get("TXXENOPS_LIBXL_DEBUG"):
    set_log_level(XTL_DEBUG)


def call(function, *args, uuid=None, via=None):
    """Call lib.<function>(*args) (or via.<function>); a negative result
    raises (see errors.error_for) with what libxl logged meanwhile on this
    thread.  Returns the result otherwise."""
    outer = getattr(_capture, "messages", None)
    _capture.messages = messages = []
    try:
        rc = getattr(via or lib, function)(*args)
    finally:
        _capture.messages = outer
        if outer is not None:
            outer.extend(messages)
    if isinstance(rc, int) and rc < 0:
        raise error_for(function, rc, messages, uuid)
    return rc


@ffi.def_extern()
def txx_log_message(level, errnoval, context, message):
    try:
        msg = text(message)
        if errnoval > 0:
            msg = "%s: %s" % (msg, os.strerror(errnoval))
        where = text(context, "libxl")
        if level >= XTL_WARN:
            messages = getattr(_capture, "messages", None)
            if messages is not None:
                messages.append("%s: %s" % (where, msg))
        log.log(_PY_LEVELS.get(level, logging.INFO), "%s: %s", where, msg)
    except BaseException:
        try:
            log.exception("libxl log callback failed")
        except BaseException:
            pass


# The receivers of libxl's event hooks, by the ``user`` pointer given to
# libxl_event_register_callbacks (ffi.new_handle of the receiver).

@ffi.def_extern()
def txx_event_occurs(user, event):
    """libxl hands over an event (ours to free).  Called on whatever thread
    is inside libxl; the receiver only queues it."""
    try:
        receiver = ffi.from_handle(user)
        domid = ffi.new("uint32_t *")
        kind = ffi.new("int *")
        reason = ffi.new("int *")
        for_user = ffi.new("uint64_t *")
        lib.txx_event_fields(event, domid, kind, reason, for_user)
        receiver.libxl_event(domid[0], kind[0], reason[0], for_user[0])
    except BaseException:
        try:
            log.exception("libxl event callback failed")
        except BaseException:
            pass
    finally:
        lib.libxl_event_free(ffi.NULL, event)


@ffi.def_extern()
def txx_disaster(user, kind, message, errnoval):
    """libxl can no longer deliver events of ``kind`` (0: any)."""
    try:
        receiver = ffi.from_handle(user)
        msg = text(message)
        if errnoval > 0:
            msg = "%s: %s" % (msg, os.strerror(errnoval))
        receiver.libxl_disaster(kind, msg)
    except BaseException:
        try:
            log.exception("libxl disaster callback failed")
        except BaseException:
            pass


# libxl_osevent_hooks, dispatched to the EventLoop (loop.py) whose handle
# is ``user``.  Called with libxl's context lock held: registry only.

def _hook(default):
    def wrap(fn):
        def hook(user, *args):
            try:
                return fn(ffi.from_handle(user), *args)
            except BaseException:
                try:
                    log.exception("libxl event loop hook %s failed",
                                  fn.__name__)
                except BaseException:
                    pass
                return default
        hook.__name__ = fn.__name__
        return ffi.def_extern(name=fn.__name__)(hook)
    return wrap


_REG_FAIL = -12     # ERROR_OSEVENT_REG_FAIL


@_hook(_REG_FAIL)
def txx_fd_register(loop, fd, reg_out, events, for_libxl):
    return loop.fd_register(fd, reg_out, events, for_libxl)


@_hook(_REG_FAIL)
def txx_fd_modify(loop, fd, reg_update, events):
    return loop.fd_modify(fd, reg_update, events)


@_hook(None)
def txx_fd_deregister(loop, fd, reg):
    loop.fd_deregister(fd, reg)


@_hook(_REG_FAIL)
def txx_timeout_register(loop, reg_out, abs_time, for_libxl):
    return loop.timeout_register(reg_out, abs_time, for_libxl)


@_hook(_REG_FAIL)
def txx_timeout_modify(loop, reg_update, abs_time):
    return loop.timeout_modify(reg_update, abs_time)


@_hook(None)
def txx_timeout_deregister(loop, reg):
    loop.timeout_deregister(reg)
