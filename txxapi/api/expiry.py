"""A base for the managers that expire what they keep on a timer."""

from twisted.internet import task


class Expiring:
    """Calls ``self.expire()`` every ``interval`` seconds between start()
    and stop(), on ``self.clock`` (a reactor, or a Clock in tests)."""

    interval = 60
    clock = None
    _timer = None

    def start(self):
        self._timer = task.LoopingCall(self.expire)
        if self.clock is not None:
            self._timer.clock = self.clock
        self._timer.start(self.interval, now=False)

    def stop(self):
        if self._timer is not None and self._timer.running:
            self._timer.stop()

    def expire(self, now=None):
        raise NotImplementedError
