#!/usr/bin/env python3
"""
Write txxapi's datamodel modules from a XenAPI description file.

Developers run this when the upstream interface moves; the server never
reads the description file.  Only interface facts are carried over (names,
types, qualifiers, defaults, roles, errors, lifecycle states); upstream's
prose descriptions are left behind.

    python3 tools/gen_datamodel.py path/to/xenapi.json path/to/errors.json
"""

import json
import os
import sys

FAMILIES = {
    "session": ["session", "auth", "subject", "role", "user", "secret"],
    "task": ["task", "event", "message", "blob", "data_source"],
    "pool": ["pool", "pool_patch", "pool_update", "host", "host_crashdump",
             "host_patch", "host_metrics", "host_cpu", "Feature",
             "Certificate", "Repository", "Observer", "Cluster",
             "Cluster_host"],
    "vm": ["VM", "VM_metrics", "VM_guest_metrics", "VMPP", "VMSS",
           "VM_appliance", "console", "crashdump", "VTPM", "DR_task"],
    "network": ["network", "VIF", "VIF_metrics", "PIF", "PIF_metrics",
                "Bond", "VLAN", "tunnel", "network_sriov", "SDN_controller",
                "PVS_site", "PVS_server", "PVS_proxy", "PVS_cache_storage"],
    "storage": ["SM", "SR", "sr_stat", "probe_result", "LVHD", "VDI", "VBD",
                "VBD_metrics", "PBD", "vdi_nbd_server_info"],
    "devices": ["PCI", "PGPU", "GPU_group", "VGPU", "VGPU_type", "PUSB",
                "USB_group", "VUSB"],
}

ROLE_NAMES = {
    (): "NOBODY",
    ("pool-admin",): "POOL_ADMIN",
    ("pool-admin", "pool-operator"): "POOL_OPERATOR",
    ("pool-admin", "pool-operator", "client-cert"): "POOL_OPERATOR_CC",
    ("pool-admin", "pool-operator", "vm-power-admin"): "VM_POWER_ADMIN",
    ("pool-admin", "pool-operator", "vm-power-admin", "client-cert"):
        "VM_POWER_ADMIN_CC",
    ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin"): "VM_ADMIN",
    ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin",
     "vm-operator"): "VM_OPERATOR",
    ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin",
     "vm-operator", "client-cert"): "VM_OPERATOR_CC",
    ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin",
     "vm-operator", "client-cert", "read-only"): "READ_ONLY",
}

QUALIFIERS = {"RW": "RW", "RO/constructor": "RO_CONSTRUCTOR",
              "RO/runtime": "RO_RUNTIME"}
STATES = {"Published_s": None, "Prototyped_s": "PROTOTYPED",
          "Deprecated_s": "DEPRECATED", "Removed_s": "REMOVED"}
CLASS_IMPLICIT = ("get_record", "get_by_uuid", "get_by_name_label", "get_all",
                  "get_all_records", "create", "destroy")


def roles(names):
    return ROLE_NAMES[tuple(names)]


def state_arg(lifecycle):
    state = STATES[lifecycle["state"]]
    return ", state=%s" % state if state else ""


def render_class(cls):
    messages = {m["name"]: m for m in cls["messages"]}
    implicit = {m["name"]: m for m in cls["messages"] if m["implicit"]}
    # Getter roles: the most common role of implicit field getters.
    counts = {}
    for f in cls["fields"]:
        m = implicit.get("get_" + f["name"])
        if m:
            r = roles(m["roles"])
            counts[r] = counts.get(r, 0) + 1
    read_roles = max(counts, key=counts.get) if counts else "READ_ONLY"

    out = ["%s = Class(" % ident(cls["name"]), "    %r," % cls["name"]]
    if cls["lifecycle"]["state"] != "Published_s":
        out.append("    state=%s," % STATES[cls["lifecycle"]["state"]])
    out.append("    read_roles=%s," % read_roles)
    has_getters = any(("get_" + f["name"]) in implicit for f in cls["fields"])
    if cls["fields"] and not has_getters:
        out.append("    field_messages=False,")
    imp = [(n, implicit[n]) for n in CLASS_IMPLICIT if n in implicit]
    if imp:
        out.append("    implicit={")
        for n, m in imp:
            state = STATES[m["lifecycle"]["state"]]
            value = roles(m["roles"]) if state is None else \
                "(%s, %s)" % (roles(m["roles"]), state)
            out.append("        %r: %s," % (n, value))
        out.append("    },")
    out.append("    fields=(")
    for f in cls["fields"]:
        args = [repr(f["name"]), repr(f["type"]), QUALIFIERS[f["qualifier"]]]
        if "default" in f:
            args.append("default=%r" % f["default"])
        extra = state_arg(f["lifecycle"])
        getter = implicit.get("get_" + f["name"])
        if getter and roles(getter["roles"]) != read_roles:
            args.append("read_roles=%s" % roles(getter["roles"]))
        if f["qualifier"] == "RW":
            setter = messages.get("set_" + f["name"])
            if setter is not None and setter["implicit"]:
                args.append("write_roles=%s" % roles(setter["roles"]))
            else:
                sys.exit("RW field without an implicit setter: %s.%s"
                         % (cls["name"], f["name"]))
        out.append("        Field(%s%s)," % (", ".join(args), extra))
    out.append("    ),")
    explicit = [m for m in cls["messages"] if not m["implicit"]]
    if explicit:
        out.append("    messages=(")
        for m in explicit:
            out.append(render_message(m))
        out.append("    ),")
    if cls["enums"]:
        out.append("    enums=(")
        for e in cls["enums"]:
            values = tuple(v["name"] for v in e["values"])
            out.append("        Enum(%r, %r)," % (e["name"], values))
        out.append("    ),")
    out.append(")")
    return "\n".join(out)


def render_message(m):
    params = list(m["params"])
    session = bool(params) and params[0]["name"] == "session_id" and \
        params[0]["type"] == "session ref"
    if session:
        params = params[1:]
    args = [repr(m["name"])]
    args.append("(%s)" % "".join("(%r, %r), " % (p["type"], p["name"])
                                 for p in params))
    args.append("result=%r" % m["result"][0])
    args.append("roles=%s" % roles(m["roles"]))
    if m["errors"]:
        args.append("errors=(%s)" % "".join(
            "%r, " % e["name"] for e in m["errors"]))
    if not session:
        args.append("session=False")
    state = STATES[m["lifecycle"]["state"]]
    if state:
        args.append("state=%s" % state)
    return "        Message(%s)," % ", ".join(args)


def ident(name):
    return "C_" + name


HEADER = '''"""
XenAPI classes of the %s family, stated as facts: names, types,
qualifiers, defaults, roles, errors and lifecycle.  Written by
tools/gen_datamodel.py; edit that script, not this file, for bulk changes.
"""

from txxapi.datamodel.schema import (  # noqa: F401
    Class, Enum, Field, Message, RW, RO_CONSTRUCTOR, RO_RUNTIME,
    PROTOTYPED, DEPRECATED, REMOVED)
from txxapi.datamodel.roles import (  # noqa: F401
    NOBODY, POOL_ADMIN, POOL_OPERATOR, POOL_OPERATOR_CC, VM_POWER_ADMIN,
    VM_POWER_ADMIN_CC, VM_ADMIN, VM_OPERATOR, VM_OPERATOR_CC, READ_ONLY)

'''


def main(api_path, errors_path, out_dir):
    with open(api_path) as f:
        api = json.load(f)
    with open(errors_path) as f:
        errors = json.load(f)
    by_name = {c["name"]: c for c in api}
    placed = {n for names in FAMILIES.values() for n in names}
    missing = set(by_name) - placed
    if missing:
        sys.exit("classes not placed in a family: %s" % sorted(missing))
    model_dir = os.path.join(out_dir, "model")
    for family, names in FAMILIES.items():
        body = [HEADER % family]
        for n in names:
            body.append(render_class(by_name[n]))
            body.append("")
        body.append("CLASSES = (%s)" % "".join(
            "%s, " % ident(n) for n in names))
        with open(os.path.join(model_dir, family + ".py"), "w") as f:
            f.write(body[0] + "\n\n".join(body[1:]) + "\n")
    lines = ['"""Every XenAPI error code with the names of its parameters,',
             'in wire order.  Written by tools/gen_datamodel.py."""', "",
             "ERRORS = {"]
    for e in sorted(errors, key=lambda e: e["name"]):
        lines.append("    %r: (%s)," % (
            e["name"], "".join("%r, " % p for p in e["params"])))
    lines.append("}")
    with open(os.path.join(model_dir, "errors.py"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    main(sys.argv[1], sys.argv[2],
         os.path.join(here, os.pardir, "txxapi", "datamodel"))
