"""
``vm-migrate`` with storage motion, as XAPI's CLI runs it: once any of
the remote-* or vdi:/vif:/vgpu: parameters is given, the command logs
into the pool master named by remote-master= (XML-RPC over HTTPS on port
443, as hosts of a pool call each other), picks the destination host
(host=, else the first) and network (remote-network=, else the host's
management network) there, maps the VM's disks, interfaces and vGPUs to
that pool's SRs, networks and GPU groups, asks that host for its
host.migrate_receive token and hands it to VM.migrate_send here; the
remote session is logged out whatever happens.  Disks vdi: does not map
go to the destination's preferred SR: the attached shared SR with the
most free space, else the attached local one with the most.
"""

from twisted.internet import defer

from txxapi.cli.records import Failure
from txxapi.cli.select import do_op, select
from txxapi.errors import XenAPIError
from txxapi.pool.client import PeerClient, PeerUnreachable

# The parameters that ask for storage motion (any key they begin).
SXM_PARAMS = ("remote-master", "remote-username", "vif", "remote-password",
              "remote-network", "vdi", "vgpu")
# vm-migrate's own parameters of storage motion, as help lists them.
OPTIONS = ("remote-master", "remote-username", "remote-password",
           "remote-network", "vif:", "vdi:", "vgpu:")
LOGIN_VERSION = "1.3"


def wants_storage_motion(params):
    return any(k.startswith(SXM_PARAMS) for k, _ in params.items)


def map_params(params, name):
    """(key, value) of each ``name:key=value`` parameter, in order."""
    prefix = name + ":"
    return [(k[len(prefix):], v) for k, v in params.items
            if k.startswith(prefix) and len(k) > len(prefix)]


class RemotePool:
    """Calls to another pool's master as the command line's remote user."""

    def __init__(self, reactor, address):
        self.address = address
        self.client = PeerClient(reactor, address)
        self.session = None

    @defer.inlineCallbacks
    def _call(self, name, *args):
        try:
            result = yield self.client.call(name, *args)
        except PeerUnreachable:
            raise XenAPIError("CANNOT_CONTACT_HOST", self.address)
        return result

    @defer.inlineCallbacks
    def login(self, user, password):
        self.session = yield self._call(
            "session.login_with_password", user, password, LOGIN_VERSION,
            "cli")

    def call(self, name, *args):
        return self._call(name, self.session, *args)

    def logout(self):
        return self.call("session.logout").addErrback(lambda f: None)


def _either_field(fields, value):
    return " or ".join('(field "%s"="%s")' % (f, value) for f in fields)


@defer.inlineCallbacks
def _host(remote, named):
    if named is None:
        expr, missing = "true", "Failed to find a suitable host"
    else:
        expr = _either_field(("hostname", "name__label", "uuid"), named)
        missing = "Failed to find host: %s" % named
    found = yield remote.call("host.get_all_where", expr)
    if not found:
        raise Failure(missing)
    return found[0]


@defer.inlineCallbacks
def _network(remote, host, named):
    if named is not None:
        found = yield remote.call("network.get_all_where", _either_field(
            ("bridge", "name__label", "uuid"), named))
        if not found:
            raise Failure("Failed to find network: %s" % named)
        return found[0]
    pifs = yield remote.call("PIF.get_all_where",
                             '(field "host"="%s") and (field "management"='
                             '"true")' % host)
    if not pifs:
        uuid = yield remote.call("host.get_uuid", host)
        raise Failure("Could not find management PIF on host %s" % uuid)
    network = yield remote.call("PIF.get_network", pifs[0])
    return network


@defer.inlineCallbacks
def _mapped(cli, remote, name, local_class, remote_class):
    """{local ref: remote ref} of the ``name:<uuid>=<uuid>`` parameters."""
    mapping = {}
    for local_uuid, remote_uuid in map_params(cli.params, name):
        ref = yield cli.call(local_class + ".get_by_uuid", local_uuid)
        mapping[ref] = yield remote.call(remote_class + ".get_by_uuid",
                                         remote_uuid)
    return mapping


@defer.inlineCallbacks
def _preferred_sr(remote, host):
    """The destination's SR for the disks not mapped, or None."""
    pbds = yield remote.call("PBD.get_all_records_where",
                             '(field "host"="%s") and (field '
                             '"currently_attached"="true")' % host)
    attached = [r["SR"] for r in pbds.values()]
    for shared in ("true", "false"):
        srs = yield remote.call("SR.get_all_where",
                                '(not (field "content_type"="iso")) and '
                                '(field "shared"="%s")' % shared)
        free = []
        for sr in attached:
            if sr in srs:
                size = yield remote.call("SR.get_physical_size", sr)
                used = yield remote.call("SR.get_physical_utilisation", sr)
                free.append((int(size) - int(used), sr))
        if free:
            return max(free, key=lambda pair: pair[0])[1]
    return None


@defer.inlineCallbacks
def _vdi_map(cli, remote, host, ignore):
    """The user's vdi: map, every other disk of the first selected VM
    sent to the preferred SR (when one is found)."""
    vdi_map = yield _mapped(cli, remote, "vdi", "VDI", "SR")
    try:
        preferred = yield _preferred_sr(remote, host)
    except (XenAPIError, ValueError) as e:
        cli.message("Couldn't compute preferred SR, continuing with the "
                    "user-provided VDI mapping. The reason is: %s" % (e,))
        return vdi_map
    if preferred is None:
        return vdi_map
    vms = yield select(cli, "vm", ignore, include_templates=True)
    if not vms:
        raise Failure("No matching VMs found")
    for vbd in vms[0][1]["VBDs"]:
        empty = yield cli.call("VBD.get_empty", vbd)
        if not empty:
            vdi = yield cli.call("VBD.get_VDI", vbd)
            vdi_map.setdefault(vdi, preferred)
    return vdi_map


@defer.inlineCallbacks
def migrate_to_pool(cli, host_named, options, ignore):
    """Storage motion of the selected VMs to the host ``host_named`` (a
    hostname, name-label or uuid there; None: any); ``ignore``: the
    parameters that are not filters."""
    p = cli.params
    cli.message("Performing a storage live migration. Your VM's VDIs will "
                "be migrated with the VM.")
    if not all(k in p for k in ("remote-master", "remote-username",
                                "remote-password")):
        raise Failure("Storage live migration requires remote-master, "
                      "remote-username, and remote-password to be "
                      "specified. Please see 'xe help vm-migrate' for help.")
    ignore = list(ignore) + list(SXM_PARAMS)
    remote = RemotePool(cli.server.reactor, p["remote-master"])
    yield remote.login(p["remote-username"], p["remote-password"])
    try:
        host = yield _host(remote, host_named)
        network = yield _network(remote, host, p.get("remote-network"))
        vif_map = yield _mapped(cli, remote, "vif", "VIF", "network")
        vgpu_map = yield _mapped(cli, remote, "vgpu", "VGPU", "GPU_group")
        vdi_map = yield _vdi_map(cli, remote, host, ignore)
        host_name = yield remote.call("host.get_name_label", host)
        network_name = yield remote.call("network.get_name_label", network)
        cli.message("Will migrate to remote host: %s, using remote network: "
                    "%s. Here is the VDI mapping:" % (host_name,
                                                      network_name))
        for vdi, sr in vdi_map.items():
            vdi_uuid = yield cli.call("VDI.get_uuid", vdi)
            sr_uuid = yield remote.call("SR.get_uuid", sr)
            cli.message("VDI %s -> SR %s" % (vdi_uuid, sr_uuid))
        token = yield remote.call("host.migrate_receive", host, network,
                                  options)
        moved = yield do_op(cli, "vm", lambda ref, r: cli.run_task(
            "VM.migrate_send", ref, token, True, vdi_map, vif_map, options,
            vgpu_map), ignore, include_templates=True)
        if options.get("copy") == "true":
            uuid = yield remote.call("VM.get_uuid", moved[0])
            cli.lines([uuid])
    finally:
        yield remote.logout()
