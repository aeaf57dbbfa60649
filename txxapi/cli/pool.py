"""
Host, PIF and pool membership commands: host-evacuate, pif-scan,
pif-reconfigure-ip, pool-join and pool-eject, the moves of the
mastership (designate, and the emergency commands a slave runs itself
when its master is gone), each the API call XAPI's
CLI makes (what the API does not do yet answers NOT_IMPLEMENTED, printed
as any API error), with XAPI's words around them.
"""

from twisted.internet import defer

from txxapi.cli.generic import Command, map_params
from txxapi.cli.records import NULL, CliFailure, parse_enum
from txxapi.cli.select import do_op
from txxapi.errors import XenAPIError
from txxapi.pool.join import RESTART_DELAY


def seconds(value):
    """A number of seconds as XAPI prints its float (10. or 0.5)."""
    text = repr(float(value))
    return text[:-1] if text.endswith(".0") else text


@defer.inlineCallbacks
def host_evacuate(cli):
    p = cli.params
    network = NULL
    if "network-uuid" in p:
        network = yield cli.call("network.get_by_uuid", p["network-uuid"])
    batch = p.get("batch-size", "0")
    if not batch.isdigit():
        raise CliFailure("Failed to parse parameter 'batch-size': expecting "
                         "an unsigned integer, got %s" % batch)
    yield do_op(cli, "host", lambda ref, r: cli.call(
        "host.evacuate", ref, network, int(batch)),
        ["network-uuid", "batch-size"], multiple=False)


@defer.inlineCallbacks
def pif_scan(cli):
    host = yield cli.call("host.get_by_uuid", cli.params["host-uuid"])
    yield cli.call("PIF.scan", host)


def _any_case(params, key):
    """XAPI reads IP= and DNS= in any case (ip=, Dns=)."""
    for k, v in params.items:
        if k.lower() == key.lower():
            return v
    return ""


@defer.inlineCallbacks
def pif_reconfigure_ip(cli):
    p = cli.params
    pif = yield cli.call("PIF.get_by_uuid", p["uuid"])
    mode = parse_enum("ip_configuration_mode", p["mode"])
    yield cli.call("PIF.reconfigure_ip", pif, mode, _any_case(p, "IP"),
                   p.get("netmask", ""), p.get("gateway", ""),
                   _any_case(p, "DNS"))


@defer.inlineCallbacks
def pool_join(cli):
    p = cli.params
    call = "pool.join_force" if p.flag("force") else "pool.join"
    try:
        yield cli.call(call, p["master-address"], p["master-username"],
                       p["master-password"])
    except XenAPIError as e:
        if e.code != "JOINING_HOST_CONNECTION_FAILED":
            raise
        cli.lines(["Host cannot contact destination host: connection "
                   "refused.",
                   "Check destination host has services running and "
                   "accessible from this host."])
        return
    cli.lines(["Host agent will restart and attempt to join pool in %s "
               "seconds..." % seconds(RESTART_DELAY)])


@defer.inlineCallbacks
def _lost_vdis(cli, host):
    """'VDI: uuid (name)' of the VDIs on SRs only ``host`` sees: an
    ejected host's local SRs are made anew."""
    lines = []
    pbds = yield cli.call("host.get_PBDs", host)
    for pbd in pbds:
        sr = yield cli.call("PBD.get_SR", pbd)
        others = yield cli.call("SR.get_PBDs", sr)
        hosts = []
        for other in others:
            h = yield cli.call("PBD.get_host", other)
            hosts.append(h)
        if any(h != host for h in hosts):
            continue
        vdis = yield cli.call("SR.get_VDIs", sr)
        for vdi in vdis:
            record = yield cli.call("VDI.get_record", vdi)
            lines.append("VDI: %s (%s)" % (record["uuid"],
                                           record["name_label"]))
    return lines


@defer.inlineCallbacks
def pool_eject(cli):
    host = yield cli.call("host.get_by_uuid", cli.params["host-uuid"])
    if not cli.params.flag("force"):
        try:
            lost = yield _lost_vdis(cli, host)
        except XenAPIError:
            lost = []   # only a warning, as XAPI's
        cli.message("WARNING: Ejecting a host from the pool will "
                    "reinitialise that host's local SRs.")
        cli.message("WARNING: Any data contained with the local SRs will "
                    "be lost.")
        if lost:
            cli.message("The following VDI objects will be destroyed:")
            for line in lost:
                cli.message(line)
        agreed = yield cli.says_yes()
        if not agreed:
            return
    yield cli.call("pool.eject", host)
    cli.lines(["Specified host will attempt to restart as a master of a "
               "new pool in %s seconds..." % seconds(RESTART_DELAY)])


@defer.inlineCallbacks
def pool_designate_new_master(cli):
    host = yield cli.call("host.get_by_uuid", cli.params["host-uuid"])
    yield cli.call("pool.designate_new_master", host)


@defer.inlineCallbacks
def pool_emergency_transition_to_master(cli):
    if cli.server.identity.is_master and not cli.params.flag("force"):
        cli.lines(["Host agent is already master. Use '--force' to execute "
                   "the operation anyway."])
        return
    yield cli.call("pool.emergency_transition_to_master")
    cli.lines(["Host agent will restart and transition to master in %s "
               "seconds..." % seconds(RESTART_DELAY)])


@defer.inlineCallbacks
def pool_emergency_reset_master(cli):
    address = cli.params["master-address"]
    yield cli.call("pool.emergency_reset_master", address)
    cli.lines(["Host agent will restart and become slave of %s in %s "
               "seconds..." % (address, seconds(RESTART_DELAY))])


def _just(call):
    """A command that is one call without arguments."""
    return lambda cli: cli.call(call)


@defer.inlineCallbacks
def host_is_in_emergency_mode(cli):
    mode = yield cli.call("host.is_in_emergency_mode")
    cli.message("true" if mode else "false")


@defer.inlineCallbacks
def pool_ha_enable(cli):
    uuids = cli.params.get("heartbeat-sr-uuids")
    srs = []
    for uuid in uuids.split(",") if uuids is not None else []:
        srs.append((yield cli.call("SR.get_by_uuid", uuid)))
    yield cli.call("pool.enable_ha", srs, map_params(cli.params,
                                                     "ha-config"))


@defer.inlineCallbacks
def host_management_reconfigure(cli):
    pif = yield cli.call("PIF.get_by_uuid", cli.params["pif-uuid"])
    yield cli.call("host.management_reconfigure", pif)


@defer.inlineCallbacks
def pool_recover_slaves(cli):
    hosts = yield cli.call("pool.recover_slaves")
    recovered = []
    for host in hosts:
        recovered.append((yield cli.call("host.get_uuid", host)))
    cli.lines(recovered)


def commands():
    return [
        Command("host-evacuate", host_evacuate,
                optn=["network-uuid", "batch-size"], selectors="host",
                help="Migrates every VM off the selected host."),
        Command("pif-scan", pif_scan, reqd=["host-uuid"],
                help="Looks for new physical interfaces on the host."),
        Command("pif-reconfigure-ip", pif_reconfigure_ip,
                reqd=["uuid", "mode"],
                optn=["IP", "netmask", "gateway", "DNS"],
                help="Sets the PIF's IPv4 configuration (mode= none, dhcp "
                     "or static)."),
        Command("pool-join", pool_join,
                reqd=["master-address", "master-username",
                      "master-password"], optn=["force"],
                help="Makes this host join the pool of that master."),
        Command("pool-designate-new-master", pool_designate_new_master,
                reqd=["host-uuid"],
                help="Makes the host the pool's master; every host "
                     "restarts in its new role."),
        Command("pool-emergency-transition-to-master",
                pool_emergency_transition_to_master, optn=["force"],
                local=True,
                help="Run on a slave whose master is gone: the host makes "
                     "itself the master (on a master only with --force)."),
        Command("pool-emergency-reset-master", pool_emergency_reset_master,
                reqd=["master-address"], local=True,
                help="Run on a slave: points it at the master at that "
                     "address (it restarts as that master's slave)."),
        Command("pool-recover-slaves", pool_recover_slaves,
                help="On a master that took over: points every other host "
                     "it reaches at it, and lists those."),
        Command("host-is-in-emergency-mode", host_is_in_emergency_mode,
                local=True,
                help="Says (true or false) whether this host, a slave, "
                     "has lost its master."),
        Command("pool-ha-enable", pool_ha_enable,
                optn=["heartbeat-sr-uuids", "ha-config:"],
                help="Turns high availability on, its heartbeat on the SRs "
                     "given (comma-separated uuids)."),
        Command("pool-ha-disable", _just("pool.disable_ha"),
                help="Turns high availability off."),
        Command("pool-sync-database", _just("pool.sync_database"),
                help="Has every host take a copy of the pool's database "
                     "now."),
        Command("host-management-reconfigure", host_management_reconfigure,
                reqd=["pif-uuid"],
                help="Moves the host's management traffic to this PIF."),
        Command("pool-eject", pool_eject, reqd=["host-uuid"],
                help="Makes the host leave the pool (its local SRs are "
                     "made anew); asks first unless --force."),
    ]
