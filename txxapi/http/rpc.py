"""
The RPC endpoints: JSON-RPC on POST /jsonrpc, XML-RPC on every other
POST path (/, /RPC2, /json: see routes).  Each request is decoded,
handed to the dispatcher, and answered in XAPI's envelope; API failures
are HTTP 200 with a Failure status.  A body that cannot be decoded is
answered with HTTP 400 (an XML-RPC fault or a JSON-RPC parse error) and
the connection stays usable.
"""

from twisted.logger import Logger
from twisted.web import resource, server

from txxapi.db.memory import RecordMap
from txxapi.errors import XenAPIError
from txxapi.forwarding.remote import GENERATION_HEADER, TASK_HEADER
from txxapi.http import routes, streaming
from txxapi.http.local import is_local
from txxapi.wire import jsonrpc, shared, xmlrpc
from txxapi.wire.errors import MalformedRequest

log = Logger()


def _cors(request):
    request.setHeader(b"Access-Control-Allow-Origin", b"*")
    request.setHeader(b"Access-Control-Allow-Headers", b"X-Requested-With")


class Origin:
    """Where a call came from, read off its request only when asked: a
    login's refusal names the user agent, and most calls never look."""

    __slots__ = ("_request",)

    def __init__(self, request):
        self._request = request

    def get(self, key, default=None):
        request = self._request
        if key == "peer":
            return getattr(request.getClientAddress(), "host", default)
        if key == "tls":
            return request.isSecure()
        if key == "local":
            return is_local(request)
        if key == "user_agent":
            agent = request.getHeader(b"user-agent")
            return default if agent is None else \
                agent.decode("utf-8", "replace")
        if key == "forwarded":
            return forwarded_by(request, default)
        return default


def forwarded_by(request, default=None):
    """What a master says of a call it forwards here (the headers of
    txxapi.forwarding.remote): {"generation": int, "task": ref or None},
    or ``default`` for a call that was not forwarded."""
    generation = request.getHeader(GENERATION_HEADER)
    if generation is None or not generation.isdigit():
        return default
    task = request.getHeader(TASK_HEADER)
    return {"generation": int(generation),
            "task": task.decode("ascii", "replace") if task else None}


class RPCResource(resource.Resource):
    isLeaf = True

    def __init__(self, server_):
        resource.Resource.__init__(self)
        self.server = server_

    def render_OPTIONS(self, request):
        _cors(request)
        request.setHeader(b"Access-Control-Allow-Methods", b"POST, OPTIONS")
        request.setHeader(b"Content-Length", b"0")
        return b""

    def render_POST(self, request):
        _cors(request)
        body = request.content.read()
        if routes.handler_of_request(request) == routes.JSONRPC:
            return self._json(request, body)
        return self._xml(request, body)

    # -- XML-RPC --------------------------------------------------------------

    def _xml(self, request, body):
        try:
            method, params = xmlrpc.decode_call(body)
        except MalformedRequest as e:
            request.setResponseCode(400)
            request.setHeader(b"Content-Type", b"text/xml")
            return xmlrpc.encode_fault(-32700, "Malformed request: %s" % e)
        if method == "system.listMethods":
            ok = xmlrpc.encode_bare
        else:
            def ok(value):
                if isinstance(value, RecordMap):
                    if len(value) > streaming.STREAM_ABOVE:
                        return self._stream(request, b"text/xml",
                                            streaming.stream_xmlrpc, value)
                    value = value.to_dict()
                return shared.encoded(value, "xml", xmlrpc.encode_success) \
                    or shared.encoded_record(value, "xml",
                                             xmlrpc.encode_success) \
                    or xmlrpc.encode_success(value)
        self.server.dispatcher.call(method, params, Origin(request), _Reply(
            request, b"text/xml", ok, method, xmlrpc.encode_failure,
            _xml_key))
        return server.NOT_DONE_YET

    # -- JSON-RPC -------------------------------------------------------------

    def _json(self, request, body):
        try:
            call = jsonrpc.decode_call(body)
        except MalformedRequest as e:
            request.setResponseCode(400)
            request.setHeader(b"Content-Type", b"application/json")
            return jsonrpc.encode_early_failure(
                ["INTERNAL_ERROR", "Malformed request: %s" % e])
        def ok(value):
            if isinstance(value, RecordMap):
                if len(value) > streaming.STREAM_ABOVE:
                    return self._stream(request, b"application/json",
                                        streaming.stream_jsonrpc, call, value)
                value = value.to_dict()
            result = shared.encoded(value, "json", jsonrpc.dumps) or \
                shared.encoded_record(value, "json", jsonrpc.dumps)
            if result is not None:
                return jsonrpc.encode_success_encoded(call, result)
            return jsonrpc.encode_success(call, value)
        self.server.dispatcher.call(call.method, call.params, Origin(request),
                                    _Reply(request, b"application/json", ok,
                                           call.method,
                                           lambda desc: jsonrpc.encode_failure(
                                               call, desc),
                                           lambda: ("json", call.version,
                                                    jsonrpc.dumps(call.id))))
        return server.NOT_DONE_YET

    # -- shared ---------------------------------------------------------------

    @staticmethod
    def _stream(request, content_type, stream, *args):
        request.setHeader(b"Content-Type", content_type)
        stream(request, *args)
        return _STREAMING

def _xml_key():
    return "xml"


# Returned in place of a body when the answer is being streamed.
_STREAMING = object()


class _Reply:
    """One call's way back (txxapi.replies): ok(result), or the failure's
    envelope, written to its request.  A result shared by many calls is
    answered with the same response bytes for all whose envelope (what
    ok's bytes depend on besides the result: ``envelope()``) and headers
    are the same.  The request's client going away cancels a call that
    waits (event.from)."""

    __slots__ = ("request", "content_type", "encode", "method",
                 "encode_failure", "envelope", "cancel")

    def __init__(self, request, content_type, encode, method,
                 encode_failure, envelope):
        self.request = request
        self.content_type = content_type
        self.encode = encode
        self.method = method
        self.encode_failure = encode_failure
        self.envelope = envelope
        self.cancel = None
        when_lost = getattr(request, "when_lost", None)
        if when_lost is not None:
            when_lost(self)
        else:
            # twisted.web's Request says so through its finish Deferred.
            request.notifyFinish().addErrback(self.connection_lost)

    def ok(self, value):
        request = self.request
        if shared.is_shared(value):
            answer_shared = getattr(request, "answer_shared", None)
            if answer_shared is not None:
                answer_shared(value, self.envelope(), self.content_type,
                              self.encode)
                return
        self._write(self.encode(value))

    def fail(self, failure):
        try:
            _failure_description(failure, self.method)
        except _Described as e:
            self._write(self.encode_failure(e.description))

    def connection_lost(self, _reason=None):
        cancel, self.cancel = self.cancel, None
        if cancel is not None:
            cancel()

    def _write(self, body):
        request = self.request
        if body is _STREAMING or request._disconnected or request.finished:
            return
        request.setHeader(b"Content-Type", self.content_type)
        request.setHeader(b"Content-Length", str(len(body)).encode())
        request.write(body)
        request.finish()


def _failure_description(failure, method):
    """Turn any failure into an error description, carried on as a
    distinct exception so that the encoder of the envelope runs."""
    if failure.check(XenAPIError):
        raise _Described(failure.value.description)
    log.failure("internal error in {method}", failure, method=method)
    raise _Described(["INTERNAL_ERROR", failure.getErrorMessage()])


class _Described(Exception):
    def __init__(self, description):
        Exception.__init__(self, description)
        self.description = description
