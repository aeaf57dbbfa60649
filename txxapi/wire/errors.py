"""Errors shared by the wire codecs."""


class MalformedRequest(Exception):
    """The request body could not be turned into a call.

    The HTTP layer answers these with a 500 and an HTML body, as XAPI does;
    the message is for logs only.
    """
