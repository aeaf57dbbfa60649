"""
The baselines of the API benchmark, each run as its own process on a
loopback HTTPS port, each answering the responses the real server gave
to the same calls (captured beforehand, one file per method):

    python -m benchmarks.baselines twisted --port P --cert C --key K
                                   --responses JSON
    python -m benchmarks.baselines stdlib  ...

twisted: a minimal twisted.web resource with txxapi's TLS settings that
parses each call with txxapi's own XML-RPC decoder and writes the captured
bytes back: the cost of the wire alone, the ceiling dispatch and the
database could reach.

stdlib: Python's xmlrpc.server with ThreadingMixIn (a thread per
connection, blocking I/O), HTTP/1.1 keep-alive, TLS from the ssl module;
it answers the captured values, marshalled on every call as such a server
would: the thread-per-request style XAPI is criticised for.
"""

import argparse
import json
import socketserver
import ssl
import xmlrpc.client
import xmlrpc.server


def load_responses(path):
    """{method: response bytes} from the JSON map of method -> file."""
    with open(path) as f:
        files = json.load(f)
    out = {}
    for method, name in files.items():
        with open(name, "rb") as f:
            out[method] = f.read()
    return out


def run_twisted(args):
    from twisted.internet import reactor
    from twisted.web import resource, server

    from txxapi import tls
    from txxapi.wire import xmlrpc as wire

    responses = load_responses(args.responses)

    class Constant(resource.Resource):
        isLeaf = True

        def render_POST(self, request):
            method, _params = wire.decode_call(request.content.read())
            body = responses[method]
            request.setHeader(b"Content-Type", b"text/xml")
            request.setHeader(b"Content-Length", b"%d" % len(body))
            return body

    site = server.Site(Constant())
    site.log = lambda request: None
    site._parsePOSTFormSubmission = False
    reactor.listenSSL(args.port, site,
                      tls.server_context_factory(args.cert, args.key),
                      interface="127.0.0.1", backlog=1024)
    print("listening", flush=True)
    reactor.run()


class _Handler(xmlrpc.server.SimpleXMLRPCRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, like the other servers


class _ThreadedServer(socketserver.ThreadingMixIn,
                      xmlrpc.server.SimpleXMLRPCServer):
    daemon_threads = True
    request_queue_size = 1024


def run_stdlib(args):
    responses = load_responses(args.responses)
    srv = _ThreadedServer(("127.0.0.1", args.port), requestHandler=_Handler,
                          logRequests=False, allow_none=True)
    for method, body in responses.items():
        value = xmlrpc.client.loads(body)[0][0]
        srv.register_function(lambda *params, _v=value: _v, method)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    # The handshake happens in each connection's thread, not in accept().
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True,
                                 do_handshake_on_connect=False)
    print("listening", flush=True)
    srv.serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=["twisted", "stdlib"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--responses", required=True)
    args = p.parse_args()
    (run_twisted if args.kind == "twisted" else run_stdlib)(args)


if __name__ == "__main__":
    main()
