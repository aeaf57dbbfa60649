"""
What a simulated guest shows on its consoles: a framebuffer with colour
bars over a text panel (the domain's name, its state, seconds since boot
and the keys typed at it), and the text a vt100 console prints.

The text is drawn with a 3x5 font of upper-case letters, digits and a few
signs, scaled 2x, 40 characters a line.
"""

import threading
import time

WIDTH, HEIGHT = 320, 240
BARS = [(192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0),
        (192, 0, 192), (192, 0, 0), (0, 0, 192), (16, 16, 16)]
PANEL_TOP = HEIGHT * 3 // 4
INK, PAPER = (240, 240, 240), (16, 16, 16)
SCALE, CELL_W, CELL_H = 2, 8, 12
COLUMNS = WIDTH // CELL_W
TYPED_MAX = COLUMNS

# Each glyph: five rows of three bits, top row first.
_FONT_ROWS = {
    "A": "010101111101101", "B": "110101110101110", "C": "011100100100011",
    "D": "110101101101110", "E": "111100110100111", "F": "111100110100100",
    "G": "011100101101011", "H": "101101111101101", "I": "111010010010111",
    "J": "001001001101010", "K": "101101110101101", "L": "100100100100111",
    "M": "101111111101101", "N": "110101101101101", "O": "010101101101010",
    "P": "110101110100100", "Q": "010101101110011", "R": "110101110101101",
    "S": "011100010001110", "T": "111010010010010", "U": "101101101101111",
    "V": "101101101101010", "W": "101101111111101", "X": "101101010101101",
    "Y": "101101010010010", "Z": "111001010100111", "0": "111101101101111",
    "1": "010110010010111", "2": "110001010100111", "3": "110001010001110",
    "4": "101101111001001", "5": "111100110001110", "6": "011100111101111",
    "7": "111001010010010", "8": "111101111101111", "9": "111101111001110",
    "-": "000000111000000", ":": "000010000010000", ".": "000000000000010",
    "_": "000000000000111", "/": "001001010100100", " ": "0" * 15,
}
FONT = {c: [int(rows[i * 3:i * 3 + 3], 2) for i in range(5)]
        for c, rows in _FONT_ROWS.items()}
UNKNOWN = [0b111, 0b101, 0b101, 0b101, 0b111]


class Screen:
    """The state a domain's consoles show; shared by its connections and
    the backend (which sets the state), so guarded by a lock."""

    def __init__(self, name, clock=time.monotonic):
        self.name = name
        self.state = "running"
        self.clock = clock
        self.booted = clock()
        self.typed = ""
        self._lock = threading.Lock()

    def set_state(self, state):
        with self._lock:
            self.state = state

    def key(self, char):
        """A key pressed at the console: printable ones are typed,
        BackSpace removes one, Return clears the line."""
        with self._lock:
            if char == "\b":
                self.typed = self.typed[:-1]
            elif char in "\r\n":
                self.typed = ""
            else:
                self.typed = (self.typed + char)[-TYPED_MAX:]

    def type_text(self, text):
        """Printable characters typed at once (a pasted run)."""
        with self._lock:
            self.typed = (self.typed + text)[-TYPED_MAX:]

    def lines(self):
        with self._lock:
            return [self.name[:COLUMNS], "STATE: " + self.state,
                    "UP: %d S" % int(self.clock() - self.booted),
                    "> " + self.typed]

    def picture(self):
        """What the framebuffer shows now, comparable between calls."""
        return tuple(line.upper() for line in self.lines())


def _encode(colour, fmt):
    bpp, _depth, big, _tc, rmax, gmax, bmax, rsh, gsh, bsh = fmt
    r, g, b = colour
    return ((r * rmax // 255) << rsh | (g * gmax // 255) << gsh
            | (b * bmax // 255) << bsh).to_bytes(bpp // 8,
                                                 "big" if big else "little")


def bar_rows(fmt):
    """The constant top of the picture, one bytes per row."""
    encoded = [_encode(c, fmt) for c in BARS]
    bar_w = WIDTH // len(BARS)
    top = b"".join(encoded[min(x // bar_w, len(BARS) - 1)]
                   for x in range(WIDTH))
    return [top] * PANEL_TOP


def panel_rows(lines, fmt):
    """The text panel under the bars, one bytes per row."""
    ink, paper = _encode(INK, fmt), _encode(PAPER, fmt)
    blank = paper * WIDTH
    rows = []
    for line in lines:
        glyphs = [FONT.get(c, UNKNOWN) for c in line[:COLUMNS]]
        for y in range(CELL_H):
            gy = (y - 1) // SCALE
            if not 0 <= gy < 5 or y < 1:
                rows.append(blank)
                continue
            cells = []
            for glyph in glyphs:
                bits = glyph[gy]
                cells.append(b"".join(
                    ink if x < 3 * SCALE and bits >> (2 - x // SCALE) & 1
                    else paper for x in range(CELL_W)))
            row = b"".join(cells)
            rows.append(row + paper * (WIDTH - len(cells) * CELL_W))
    rows += [blank] * (HEIGHT - PANEL_TOP - len(rows))
    return rows[:HEIGHT - PANEL_TOP]
