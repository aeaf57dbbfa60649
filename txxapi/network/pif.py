"""
PIF.scan, PIF.reconfigure_ip and host.management_reconfigure, run on
the PIF's host (forwarding/network.py), as XAPI's.

- scan: a PIF for every device of the host that has none, unplugged and
  unconfigured, on the pool-wide network of its bridge (xenbrN for
  ethN), which the first host to find the device creates;
- reconfigure_ip: the mode and addresses written after XAPI's checks
  (INVALID_IP_ADDRESS_SPECIFIED [parameter] for a static configuration's
  IP, netmask, gateway or DNS); a plugged PIF is brought up again with
  them, and the host's address follows its management PIF's;
- management_reconfigure: the management flag moved to the PIF (its
  network attached), the host's address to the PIF's.

No DHCP server answers a simulated host: its management PIF's lease is
the address the host serves on, any other PIF's is none.
"""

import ipaddress

from txxapi.api.registry import implements
from txxapi.errors import XenAPIError
from txxapi.network import devices
from txxapi.values import DateTime


def _bridge(device):
    digits = device.lstrip("abcdefghijklmnopqrstuvwxyz")
    return "xenbr" + digits if digits.isdigit() else "br" + device


def _network_for(db, device):
    bridge = _bridge(device)
    found = sorted(db.where("network", bridge=bridge))
    if found:
        return found[0]
    return db.create("network", {
        "name_label": "Pool-wide network associated with %s" % device,
        "bridge": bridge, "MTU": 1500,
        "other_config": {"automatic": "true"}})


def create_physical(db, host, device, now=None, **configured):
    """The PIF of ``host``'s network device (a devices.Device), with its
    metrics, on the pool-wide network of its bridge: unplugged and
    unconfigured unless ``configured`` fields say otherwise (the first
    start's management PIF)."""
    metrics = db.create("PIF_metrics", {
        "carrier": device.carrier, "device_name": device.name,
        "speed": device.speed, "duplex": True,
        "last_updated": now or DateTime.now()})
    fields = {
        "device": device.name, "network": _network_for(db, device.name),
        "host": host, "MAC": device.MAC, "MTU": device.MTU, "VLAN": -1,
        "metrics": metrics, "physical": True,
        "currently_attached": False, "ip_configuration_mode": "None",
        "primary_address_type": "IPv4", "managed": True}
    fields.update(configured)
    return db.create("PIF", fields)


@implements("PIF.scan")
def scan(ctx, host):
    db, server = ctx.db, ctx.server
    uuid = db.fields("host", host)["uuid"]
    have = {db.fields("PIF", p)["device"]
            for p in db.where("PIF", host=host)}
    for device in devices.of_host(server.xenops.backend.name, uuid):
        if device.name not in have:
            create_physical(db, host, device)
    return ""


def _assert_ipv4(value, parameter):
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise XenAPIError("INVALID_IP_ADDRESS_SPECIFIED", parameter)


def _lease(ctx, fields):
    """What a DHCP server would give the PIF (see the module's note)."""
    if fields["management"]:
        return ctx.db.fields("host", fields["host"])["address"]
    return ""


@implements("PIF.reconfigure_ip")
def reconfigure_ip(ctx, self, mode, IP, netmask, gateway, DNS):
    db = ctx.db
    fields = db.fields("PIF", self)
    if mode == "Static":
        _assert_ipv4(IP, "IP")
        _assert_ipv4(netmask, "netmask")
        if gateway:
            _assert_ipv4(gateway, "gateway")
        for server in filter(None, DNS.split(",")):
            _assert_ipv4(server, "DNS")
    changes = {"ip_configuration_mode": mode, "IP": IP, "netmask": netmask,
               "gateway": gateway, "DNS": DNS}
    if mode == "DHCP" and fields["currently_attached"]:
        changes["IP"] = _lease(ctx, fields)
    db.update("PIF", self, changes)
    if fields["management"] and fields["currently_attached"]:
        db.update("host", fields["host"], {"address": changes["IP"]})
    return ""


@implements("host.management_reconfigure")
def management_reconfigure(ctx, pif):
    db = ctx.db
    fields = db.fields("PIF", pif)
    if db.get("pool", ctx.server.pool_ref, "ha_enabled"):
        raise XenAPIError("HA_IS_ENABLED")
    if db.exists("Bond", fields["bond_slave_of"]):
        raise XenAPIError("CANNOT_PLUG_BOND_SLAVE", pif)
    host = fields["host"]
    if fields["managed"]:
        if fields["primary_address_type"] == "IPv4" and \
                fields["ip_configuration_mode"] == "None":
            raise XenAPIError("PIF_HAS_NO_NETWORK_CONFIGURATION", pif)
        if fields["primary_address_type"] == "IPv6" and \
                fields["ipv6_configuration_mode"] == "None":
            raise XenAPIError("PIF_HAS_NO_V6_NETWORK_CONFIGURATION", pif)
        current = [p for p in db.where("PIF", host=host, management=True)]
        if current and db.fields("PIF", current[0])[
                "primary_address_type"] != fields["primary_address_type"]:
            raise XenAPIError("PIF_INCOMPATIBLE_PRIMARY_ADDRESS_TYPE")
    if fields["management"]:
        return ""
    for other in db.where("PIF", host=host, management=True):
        db.update("PIF", other, {"management": False})
    changes = {"management": True, "currently_attached": True}
    if fields["ip_configuration_mode"] == "DHCP" and not fields["IP"]:
        changes["IP"] = db.fields("host", host)["address"]
    db.update("PIF", pif, changes)
    address = changes.get("IP", fields["IP"]) or next(
        (a.split("/")[0] for a in fields["IPv6"] if a), "")
    db.update("host", host, {"address": address})
    return ""
