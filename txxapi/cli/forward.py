"""
A slave's CLI, as XAPI's: a command that came in on the local socket is
run by the master.  The slave logs in to the master with the pool secret
(the local caller is root), sends the command to the master's /cli over
HTTPS with that session on its first line, answers the master's banner,
then relays bytes both ways until either side closes; the master's
protocol, Exit included, reaches the client unchanged.  Over TCP a slave
refuses with HOST_IS_SLAVE, as the API does.
"""

from twisted.internet import defer, protocol, ssl

from txxapi.cli import protocol as P
from txxapi.pool.client import PEER_HTTPS_PORT, PeerClient, TIMEOUT

USER_AGENT = "xapi/cli-forward"


class _Master(protocol.Protocol):
    """The connection to the master's /cli: ``banner`` fires with the
    master's banner (and what followed it); ``done`` once it closes."""

    def __init__(self, request):
        self.request = request
        self.banner = defer.Deferred()
        self.done = defer.Deferred()
        self.client = None
        self._head = b""

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        if self.banner is not None:
            self._head += data
            if len(self._head) >= len(P.BANNER):
                banner, self.banner = self.banner, None
                banner.callback(self._head)
            return
        self.client.send(data)

    def connectionLost(self, reason=None):
        if self.banner is not None:
            banner, self.banner = self.banner, None
            banner.errback(ConnectionError("the master closed the "
                                           "connection"))
        if self.client is not None:
            self.client.master_closed()
        self.done.callback(None)


def _connect(reactor, address, request):
    master = _Master(request)
    ready = defer.Deferred()

    class Factory(protocol.ClientFactory):
        def buildProtocol(self, addr):
            ready.callback(master)
            return master

        def clientConnectionFailed(self, connector, reason):
            ready.errback(reason)

    reactor.connectSSL(address, PEER_HTTPS_PORT, Factory(),
                       ssl.CertificateOptions(verify=False),
                       timeout=TIMEOUT)
    return ready


def request_of(session, args, terminal=False):
    """The request a slave sends: the session first, then the command,
    CR LF between lines as XAPI's slave sends them; whether the client
    draws on a terminal passed on."""
    body = "\r\n".join(["session_id=" + session] + args).encode("utf-8")
    extra = b"%s: true\r\n" % P.TERMINAL_HEADER if terminal else b""
    return (b"POST /cli HTTP/1.0\r\nUser-agent: %s\r\n%scontent-length: "
            b"%d\r\n\r\n" % (USER_AGENT.encode(), extra, len(body)) + body)


@defer.inlineCallbacks
def forward(conn, args):
    """Run the command on the master for ``conn``'s client; fires once
    the relay has ended."""
    server = conn.server
    address = server.identity.role.master_address
    peer = PeerClient(server.reactor, address)
    session = yield peer.call("session.slave_login", server.host_ref,
                              server.pool_secret)
    try:
        master = yield _connect(server.reactor, address,
                                request_of(session, args, conn.terminal))
        head = yield master.banner
        major, _ = P.parse_banner(head[:len(P.BANNER)])
        if major != P.MAJOR:
            master.transport.loseConnection()
            raise P.ProtocolError("the master speaks protocol %d" % major)
        master.transport.write(P.BANNER)
        conn.relay_to(master, head[len(P.BANNER):])
        yield master.done
    finally:
        peer.call("session.logout", session).addErrback(lambda f: None)
