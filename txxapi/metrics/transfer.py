"""
RRDs between the pool's hosts, moved as XAPI's hosts move them: HTTPS to
the other host's port 443, the pool secret as a cookie (to another
pool's host, after a VM's move there: a session of that pool instead).

* ``PUT /rrd?uuid=<vm>&archive=true``: a stopped VM's RRD to the master,
  which keeps it; ``uuid=<host>``: a slave's backup of its RRDs (the
  host's and its VMs') to the master.
* ``PUT /rrd?uuid=<vm>``: a VM's RRD to the host it runs on now (after a
  migration), which carries it on.
  ``uuid=<host>`` or ``<sr>`` with ``archive=true``: a slave's backup
  of its host's RRD, or an SR's, to the master.
* ``GET /vm_rrd?uuid=<vm>&dbsync=true``, ``GET /host_rrd?uuid=<host>&
  dbsync=true``, ``GET /sr_rrd?uuid=<sr>&dbsync=true``: the master's
  copy, for a host where the VM starts or a host starting without its
  own RRDs.

Each body is one RRD, the XML document xcp-rrdd sends (storage.to_xml):
the state of every archive travels with the rows (the row being
consolidated), so the history continues where it was.
"""

import io
from urllib.parse import urlencode

from twisted.internet import defer
from twisted.web import client as web_client
from twisted.web.http_headers import Headers

from txxapi.pool.client import peer_agent, peer_url

PUT_PATH = "/rrd"
PATHS = {"host": "/host_rrd", "vm": "/vm_rrd", "sr": "/sr_rrd"}
CONTENT_TYPE = b"text/xml"
TIMEOUT = 30.0


class TransferFailed(Exception):
    """The other host could not be reached or refused the RRDs."""


@defer.inlineCallbacks
def _request(reactor, method, address, path, query, secret, body=None,
             timeout=TIMEOUT):
    url = peer_url(address, "%s?%s" % (path, urlencode(query)))
    headers = Headers({b"user-agent": [b"txxapi"],
                       b"content-type": [CONTENT_TYPE]})
    if secret is not None:
        headers.setRawHeaders(b"cookie", [b"pool_secret=" + secret.encode()])
    producer = None if body is None else \
        web_client.FileBodyProducer(io.BytesIO(body))
    try:
        d = peer_agent(reactor).request(method, url, headers, producer)
        d.addTimeout(timeout, reactor)
        response = yield d
        data = yield web_client.readBody(response)
    except Exception as e:
        raise TransferFailed("%s %s on %s: %s" % (method.decode(), path,
                                                  address, e))
    return response.code, data


@defer.inlineCallbacks
def put(reactor, address, secret, uuid, body, archive, timeout=TIMEOUT,
        session=None):
    """Send an RRD document; TransferFailed unless it was taken.  To a
    host of another pool (a VM moved there): no ``secret``, the
    ``session`` there instead."""
    query = [("uuid", uuid)] + ([("archive", "true")] if archive else []) \
        + ([("session_id", session)] if session else [])
    code, data = yield _request(reactor, b"PUT", address, PUT_PATH, query,
                                secret, body, timeout)
    if code != 200:
        raise TransferFailed("PUT /rrd on %s: %d %r" % (address, code,
                                                        data[:200]))


@defer.inlineCallbacks
def fetch(reactor, address, secret, path, uuid, timeout=TIMEOUT):
    """The master's RRD document of one owner, None when it keeps
    none."""
    code, data = yield _request(reactor, b"GET", address, path,
                                [("uuid", uuid), ("dbsync", "true")],
                                secret, timeout=timeout)
    if code == 404:
        return None
    if code != 200:
        raise TransferFailed("GET %s on %s: %d" % (path, address, code))
    return data
