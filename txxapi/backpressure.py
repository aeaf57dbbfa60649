"""
Pausing the reading of a connection whose input arrives faster than it is
consumed (an upload's body, queued NBD requests).
"""


class PausableReading:
    """For a class with ``transport``: ``_pause_reading`` and
    ``_resume_reading`` pass a pause or resume on to the transport only
    when it changes something, so repeated calls are harmless and the
    transport is never resumed by a part that did not pause it."""

    _reading_paused = False

    def _pause_reading(self):
        if not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()

    def _resume_reading(self):
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()
