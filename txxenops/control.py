"""
The per-VM control both backends keep: operations on one VM run one at a
time, and a hard operation can interrupt a waiting one.
"""

import contextlib
import threading


class Control:
    """Serialises the operations on one VM; ``cancel`` interrupts a wait."""

    def __init__(self, uuid):
        self.uuid = uuid
        self.lock = threading.Lock()
        self.cancel = threading.Event()

    @contextlib.contextmanager
    def operation(self):
        """Hold the VM for one operation.  An interruption aimed at the
        operation before it is over, not at this one, is forgotten."""
        with self.lock:
            self.cancel.clear()
            yield self


def control_of(controls, uuid):
    """The Control of VM ``uuid`` in the dict ``controls``, made on first
    use (the caller holds the lock that guards the dict)."""
    ctl = controls.get(uuid)
    if ctl is None:
        ctl = controls[uuid] = Control(uuid)
    return ctl
