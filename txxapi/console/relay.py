"""
Taking a connection over from twisted.web and splicing it to a console
server: bytes both ways, in constant memory (each side's transport is the
producer of the other's, so a full transport pauses the reader), and
either side closing closes both.
"""

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.protocols.policies import ProtocolWrapper


def take_over(request, proto, on_end):
    """Detach the request's connection from twisted.web and give it to
    ``proto``; ``on_end`` is called when it closes.  Returns the bytes
    the client sent after the request head, for ``proto`` once it is
    joined."""
    channel = request.channel
    transport = channel.transport
    # The HTTP channel registered itself as the producer of its transport.
    IPushProducer(transport).unregisterProducer()
    if hasattr(channel, "_end_header"):
        channel._end_header()
    early = b"".join(getattr(channel, "_dataBuffer", []))
    channel._dataBuffer = []
    # The per-client connection count is held until the relay ends:
    # twisted.web never sees this connection close.
    client, channel._client = getattr(channel, "_client", None), None

    def release():
        if client is not None:
            channel.site.client_connections.release(client)
        on_end()
    proto.release = release
    channel.transport = None
    if isinstance(transport, ProtocolWrapper):
        transport.wrappedProtocol = proto
    else:
        transport.protocol = proto
    proto.makeConnection(transport)
    transport.resumeProducing()
    return early


def flow(consumer_transport, producer_transport):
    """Pause ``producer_transport``'s reading while the consumer's write
    buffer is full."""
    consumer_transport.registerProducer(producer_transport, True)


def end(transport):
    """Close a transport of the relay.  The other side must stop being
    its producer first: a TLS transport would otherwise wait for that
    before closing."""
    if getattr(transport, "producer", None) is not None or \
            getattr(transport, "_producer", None) is not None:
        transport.unregisterProducer()
    transport.loseConnection()


class Side(protocol.Protocol):
    """One end of a splice; ``peer`` is the other end (a Side or anything
    with send() and close())."""

    peer = None
    release = None
    closed = False

    def dataReceived(self, data):
        if self.peer is not None:
            self.peer.send(data)

    def send(self, data):
        if not self.closed:
            self.transport.write(data)

    def close(self):
        if not self.closed and self.transport is not None:
            end(self.transport)

    def connectionLost(self, reason):
        self.closed = True
        if self.release is not None:
            release, self.release = self.release, None
            release()
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.peer = None
            peer.close()


def connect(reactor, port):
    """A Deferred firing with a Side connected to 127.0.0.1:``port``,
    paused until join()ed with the client's side."""
    ready = defer.Deferred()

    class Factory(protocol.ClientFactory):
        def buildProtocol(self, addr):
            return _Backend(ready)

        def clientConnectionFailed(self, connector, reason):
            ready.errback(reason)

    reactor.connectTCP("127.0.0.1", port, Factory(), timeout=10)
    return ready


def join(client, backend):
    """Relay between two connected Sides until either closes."""
    if backend.closed:
        client.close()
        return
    client.peer, backend.peer = backend, client
    flow(client.transport, backend.transport)
    flow(backend.transport, client.transport)
    backend.transport.resumeProducing()


class _Backend(Side):
    def __init__(self, ready):
        self.ready = ready

    def connectionMade(self):
        self.transport.pauseProducing()
        ready, self.ready = self.ready, None
        ready.callback(self)
