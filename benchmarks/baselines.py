"""
The baselines of the API benchmark, each run as its own process on two
loopback ports (plain HTTP and HTTPS), each answering the responses the
real server gave to the same calls (captured beforehand, one file per
method):

    python -m benchmarks.baselines raw --port P --tls-port Q --cert C
                                   --key K --responses JSON
    python -m benchmarks.baselines twisted ...
    python -m benchmarks.baselines stdlib  ...

raw: a bare Twisted Protocol with txxapi's TLS settings: it splits
keep-alive requests on Content-Length, decodes each call with txxapi's
own XML-RPC decoder (it must know the method to answer) and writes a
fixed header and the captured bytes: what the reactor, TLS and the
decoder cost and nothing else, the ceiling any Twisted server of these
calls could reach.

twisted: the same behind a minimal twisted.web resource: the ceiling
with twisted.web's Request (header parsing, its objects per request).

stdlib: Python's xmlrpc.server with ThreadingMixIn (a thread per
connection, blocking I/O), HTTP/1.1 keep-alive, TLS from the ssl module;
it answers the captured values, marshalled on every call as such a server
would: the thread-per-request style XAPI is criticised for.
"""

import argparse
import json
import socketserver
import ssl
import threading
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


def listen_twisted(factory, args):
    """Serve factory on the plain and the TLS port, then run."""
    from twisted.internet import reactor

    from txxapi import tls
    reactor.listenTCP(args.port, factory, interface="127.0.0.1",
                      backlog=1024)
    reactor.listenSSL(args.tls_port, factory,
                      tls.server_context_factory(args.cert, args.key),
                      interface="127.0.0.1", backlog=1024)
    print("listening", flush=True)
    reactor.run()


def run_raw(args):
    from twisted.internet import protocol

    from txxapi.wire import xmlrpc as wire

    answers = {method: b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body
               for method, body in load_responses(args.responses).items()}

    class Raw(protocol.Protocol):
        buffer = b""

        def dataReceived(self, data):
            buf = self.buffer + data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = buf[:end].lower()
                i = head.find(b"\ncontent-length:") + 16
                j = head.find(b"\r", i)
                start = end + 4
                stop = start + int(head[i:j if j > 0 else None])
                if len(buf) < stop:
                    break
                method, _params = wire.decode_call(buf[start:stop])
                buf = buf[stop:]
                self.transport.write(answers[method])
            self.buffer = buf

    factory = protocol.Factory()
    factory.protocol = Raw
    listen_twisted(factory, args)


def run_twisted(args):
    from twisted.web import resource, server

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
    listen_twisted(site, args)


class _Handler(xmlrpc.server.SimpleXMLRPCRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, like the other servers


class _ThreadedServer(socketserver.ThreadingMixIn,
                      xmlrpc.server.SimpleXMLRPCServer):
    daemon_threads = True
    request_queue_size = 1024


def stdlib_server(port, responses):
    srv = _ThreadedServer(("127.0.0.1", port), requestHandler=_Handler,
                          logRequests=False, allow_none=True)
    for method, body in responses.items():
        value = xmlrpc.client.loads(body)[0][0]
        srv.register_function(lambda *params, _v=value: _v, method)
    return srv


def run_stdlib(args):
    responses = load_responses(args.responses)
    plain = stdlib_server(args.port, responses)
    secure = stdlib_server(args.tls_port, responses)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    # The handshake happens in each connection's thread, not in accept().
    secure.socket = ctx.wrap_socket(secure.socket, server_side=True,
                                    do_handshake_on_connect=False)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    print("listening", flush=True)
    secure.serve_forever()


RUN = {"raw": run_raw, "twisted": run_twisted, "stdlib": run_stdlib}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=sorted(RUN))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls-port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--responses", required=True)
    args = p.parse_args()
    RUN[args.kind](args)


if __name__ == "__main__":
    main()
