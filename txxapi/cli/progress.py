"""
The progress line ``xe`` draws on a terminal while it sends or receives a
file: bytes so far (of the total when it is known), rate, time left.  It
draws nothing when its stream is no terminal, so scripts see exactly the
output XAPI's ``xe`` gives.  TaskBar is the server's side: the progress
of a long command's task, drawn on the client's stderr when the client
says that is a terminal (or the command was given progress=, as XAPI's).
"""

import time

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
REDRAW = 0.2   # seconds between redraws
WIDTH = 20     # cells of the bar


def human(n):
    n = float(n)
    for unit in UNITS:
        if n < 1024 or unit == UNITS[-1]:
            return ("%d %s" % (n, unit)) if unit == "B" else \
                "%.1f %s" % (n, unit)
        n /= 1024


def clock(seconds):
    seconds = int(seconds)
    return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60,
                             seconds % 60)


class Progress:
    def __init__(self, stream, label, total=None, now=time.monotonic):
        self.stream = stream
        self.label = label
        self.total = total
        self.now = now
        self.done = 0
        self.start = now()
        self._drawn = 0.0
        self.active = is_terminal(stream)

    def line(self):
        elapsed = max(self.now() - self.start, 1e-6)
        rate = self.done / elapsed
        parts = [self.label]
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            cells = int(fraction * WIDTH)
            parts.append("[%s%s] %3d%%" % ("#" * cells, " " * (WIDTH - cells),
                                          int(fraction * 100)))
            parts.append("%s / %s" % (human(self.done), human(self.total)))
        else:
            parts.append(human(self.done))
        parts.append("%s/s" % human(rate))
        if self.total and rate > 0:
            left = max(self.total - self.done, 0) / rate
            parts.append("ETA %s" % clock(left))
        return "  ".join(parts)

    def advance(self, n):
        self.done += n
        if not self.active:
            return
        t = self.now()
        if t - self._drawn >= REDRAW:
            self._drawn = t
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()

    def finish(self):
        if self.active:
            self.stream.write("\r\x1b[K" + self.line() + "\n")
            self.stream.flush()

    def clear(self):
        if self.active:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class TaskBar:
    """The bar the server draws (as PrintStderr text) for a task a
    command waits for: its progress, the time so far and the time left.
    ``text(progress)`` is what to send, or None when nothing changed
    enough to redraw; ``last()`` ends the bar with a newline."""

    def __init__(self, now):
        self.now = now
        self.start = now()
        self._drawn = None   # (time, percent)
        self.progress = 0.0

    def _line(self):
        fraction = min(max(self.progress, 0.0), 1.0)
        cells = int(fraction * WIDTH)
        elapsed = self.now() - self.start
        parts = ["[%s%s] %3d%%" % ("#" * cells, " " * (WIDTH - cells),
                                   int(fraction * 100)),
                 "elapsed %s" % clock(elapsed)]
        if 0 < fraction < 1:
            parts.append("ETA %s" % clock(elapsed * (1 - fraction)
                                          / fraction))
        return "\r\x1b[K" + "  ".join(parts)

    def text(self, progress):
        self.progress = progress
        t, percent = self.now(), int(min(max(progress, 0.0), 1.0) * 100)
        if self._drawn is not None and (
                percent == self._drawn[1] or t - self._drawn[0] < REDRAW):
            return None
        self._drawn = (t, percent)
        return self._line()

    def last(self):
        return self._line() + "\n"
