"""
Calls from this host to another host of the pool: XML-RPC over HTTPS to
port 443 of its address, through Twisted's HTTP client so the reactor
never waits.  As XAPI's first step of a join, the peer's certificate is
not verified (pool certificates come with a later slice).  A XenAPI
failure comes back as the same XenAPIError; a peer that cannot be
reached as JOINING_HOST_CONNECTION_FAILED's kin, chosen by the caller.

Each call waits a bounded time for its answer (ANSWER_TIMEOUT by
default, XAPI's master_connection_default_timeout): a host that takes
the connection but never answers (its process stopped, its machine
wedged) is PeerUnreachable then, its connection dropped.  A call that
is long by nature passes ``timeout=None`` and has its peer's liveness
judged otherwise (txxapi.forwarding.remote watches it with pings).
"""

import io

from twisted.internet import defer, ssl
from twisted.web import client as web_client
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from txxapi.errors import XenAPIError
from txxapi.wire import xmlrpc

PEER_HTTPS_PORT = 443
TIMEOUT = 30
ANSWER_TIMEOUT = 10.0


class PeerUnreachable(Exception):
    """The peer could not be reached or did not answer XML-RPC."""


@implementer(IPolicyForHTTPS)
class _NoVerification:
    def creatorForNetloc(self, hostname, port):
        return ssl.CertificateOptions(verify=False)


def _url(address):
    host = "[%s]" % address if ":" in address else address
    return ("https://%s:%d/" % (host, PEER_HTTPS_PORT)).encode()


class _QuietFactory(web_client._HTTP11ClientFactory):
    # One log line per connection is noise on a busy pool.
    noisy = False


def peer_agent(reactor):
    """An HTTP client for the pool's hosts: HTTPS without verifying the
    peer's certificate, no connection kept."""
    connections = web_client.HTTPConnectionPool(reactor, persistent=False)
    connections._factory = _QuietFactory
    return web_client.Agent(reactor, _NoVerification(),
                            connectTimeout=TIMEOUT, pool=connections)


def peer_url(address, path):
    """``path`` (with its query) on port 443 of the host at ``address``."""
    return _url(address)[:-1] + path.encode()


class PeerClient:
    """XML-RPC calls to one host, by its management address."""

    def __init__(self, reactor, address):
        self.reactor = reactor
        self.address = address
        self.agent = peer_agent(reactor)

    @defer.inlineCallbacks
    def call(self, method, *params, headers=None, timeout=ANSWER_TIMEOUT):
        """``headers``: more HTTP headers (name -> value, bytes);
        ``timeout``: seconds the answer is waited for (None: as long as
        it takes)."""
        body = xmlrpc.encode_call(method, params)
        sent = Headers({b"content-type": [b"text/xml"]})
        for name, value in (headers or {}).items():
            sent.setRawHeaders(name, [value])
        exchange = self._exchange(sent, body)
        if timeout is not None:
            exchange.addTimeout(timeout, self.reactor)
        try:
            data = yield exchange
        except defer.TimeoutError:
            raise PeerUnreachable("%s did not answer %s within %g s"
                                  % (self.address, method, timeout))
        except Exception as e:
            raise PeerUnreachable("%s: %s" % (self.address, e))
        try:
            reply = xmlrpc.decode_response(data)
        except (xmlrpc.MalformedRequest, xmlrpc.Fault) as e:
            raise PeerUnreachable("%s answered no XenAPI: %s"
                                  % (self.address, e))
        if not isinstance(reply, dict):
            raise PeerUnreachable("%s answered no XenAPI: %r"
                                  % (self.address, reply))
        if reply.get("Status") != "Success":
            description = reply.get("ErrorDescription") or ["INTERNAL_ERROR"]
            raise XenAPIError(*description)
        return reply.get("Value")

    @defer.inlineCallbacks
    def _exchange(self, headers, body):
        """The answer's body; cancelled, it drops the connection."""
        response = yield self.agent.request(
            b"POST", _url(self.address), headers,
            web_client.FileBodyProducer(io.BytesIO(body)))
        data = yield web_client.readBody(response)
        return data


@defer.inlineCallbacks
def local_call(reactor, address, pool_secret, method, *args):
    """``method`` on the host at ``address`` through a local login with
    the pool secret (what a host serves whatever its state, emergency
    mode included)."""
    client = PeerClient(reactor, address)
    session = yield client.call("session.slave_local_login", pool_secret)
    try:
        result = yield client.call(method, session, *args)
    finally:
        try:
            yield client.call("session.local_logout", session)
        except (PeerUnreachable, XenAPIError):
            pass
    return result
