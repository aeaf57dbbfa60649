"""Errors shared by the wire codecs."""


class MalformedRequest(Exception):
    """The request body could not be turned into a call.

    The RPC endpoints answer these with HTTP 400: an XML-RPC fault, or a
    JSON-RPC parse error.
    """
