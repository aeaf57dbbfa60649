"""txxapi: the XenAPI toolstack daemon on Twisted."""

__version__ = "0.1.0"
