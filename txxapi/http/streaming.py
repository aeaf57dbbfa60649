"""
Large answers sent in slices: a map of many records (VM.get_all_records
on a big pool) is encoded a slice at a time, each slice written as soon as
it is ready, with the reactor free to serve other calls in between.  The
body goes out with chunked transfer encoding; memory stays bounded by a
slice rather than the whole answer.
"""

from twisted.internet import task
from twisted.logger import Logger

from txxapi.wire import jsonrpc, xmlrpc

log = Logger()

STREAM_ABOVE = 256   # records; smaller answers are encoded in one go
SLICE = 100          # records encoded per reactor turn


def _write_slices(request, head, slices, tail):
    """Write head, every slice, then tail; stop early if the client goes."""
    gone = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))
    request.write(head)

    def produce():
        for piece in slices:
            if gone:
                return
            request.write(piece)
            yield None
        if not gone:
            request.write(tail)
            request.finish()

    d = task.cooperate(produce()).whenDone()
    d.addErrback(lambda f: log.failure("streaming an answer", f))
    return d


def _chunks(items, size=SLICE):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# A placeholder both encoders write verbatim, to split an envelope at.
_SLOT = "@@txxapi-value@@"


def stream_xmlrpc(request, record_map):
    head, tail = xmlrpc.encode_success(_SLOT).split(
        b"<value>" + _SLOT.encode() + b"</value>")
    head += b"<value><struct>"
    tail = b"</struct></value>" + tail

    def slices():
        for chunk in _chunks(record_map.items()):
            yield "".join(
                "<member><name>%s</name>%s</member>"
                % (ref, xmlrpc.encode_value(rec)) for ref, rec in chunk
            ).encode("utf-8")
    return _write_slices(request, head, slices(), tail)


def stream_jsonrpc(request, call, record_map):
    head, tail = jsonrpc.encode_success(call, _SLOT).split(
        b'"' + _SLOT.encode() + b'"')
    head += b"{"
    tail = b"}" + tail

    def slices():
        first = True
        for chunk in _chunks(record_map.items()):
            body = b",".join(jsonrpc.dumps(ref) + b":" + jsonrpc.dumps(rec)
                             for ref, rec in chunk)
            yield body if first else b"," + body
            first = False
    return _write_slices(request, head, slices(), tail)
