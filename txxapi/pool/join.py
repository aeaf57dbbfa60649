"""
Joining a pool and leaving it, as XAPI's pool.join and pool.eject do.

The joiner (``join``): logs in to the master over HTTPS without
verifying its certificate, runs XAPI's pre-join checks in XAPI's order
(each refusal changes nothing on either side), takes the pool secret
(``pool.initial_auth``), logs in with it, and hands the master the
records of its own objects (``introduce``), then writes
``slave:<master>`` with the pool's secret and restarts as a slave.

The master (``introduce``): creates those records in its database, the
joiner's networks matched to its own by bridge, as XAPI's join matches
them; references to objects it was not given become null.

Ejection (``eject_here``): the host forgets its pool: pool.conf says
master, its secret and database files go, and it restarts as the fresh
master of a pool of its own (its identity, the inventory, stays).
"""

import atexit
import json
import logging
import os
import shutil
import sys

from twisted.internet import defer
from twisted.logger import Logger

from txxapi.datamodel import MODEL
from txxapi.datamodel.types import Ref, SetType
from txxapi.errors import XenAPIError
from txxapi.files import write_atomically
from txxapi.pool import database as pool_database
from txxapi.pool import role as pool_role
from txxapi.pool.client import PeerClient, PeerUnreachable
from txxapi.values import NULL_REF

log = Logger()

# What a restarting host gets after the answer has left (the process
# exits; its supervisor, systemd or the tests, starts it again).
RESTART_DELAY = 0.5
# pool.introduce_host waits on the master for the pool's etcd to take the
# joiner (a first join starts it), each step bounded at a minute there.
INTRODUCE_TIMEOUT = 180.0
# The data dir's database files, dropped on ejection.
DATABASE_FILES = ("db", "pooldb", "replica", "etcd")
HOMOGENEITY_KEYS = ("platform_version", "product_brand", "build_number")


def _vms_running(db):
    return [ref for ref, f in db.records("VM")
            if not f["is_control_domain"] and f["power_state"] == "Running"]


def _local_srs(db, host_ref):
    """The SRs plugged only here: this host's own storage (the tools SR
    is the pool's, not the host's)."""
    srs = []
    for ref, f in db.records("SR"):
        if f["is_tools_sr"]:
            continue
        pbds = db.where("PBD", SR=ref)
        if pbds and all(db.get("PBD", p, "host") == host_ref for p in pbds):
            srs.append(ref)
    return srs


def local_checks(db, host_ref, master_host, force):
    """XAPI's pre-join checks that need only the master's host record,
    in XAPI's order; the first that fails raises its error."""
    me = db.fields("host", host_ref)
    if master_host["uuid"] == me["uuid"]:
        raise XenAPIError("OPERATION_NOT_ALLOWED",
                          "Host is already part of a pool"
                          if db.count("host") > 1
                          else "Host cannot become slave of itself")
    if db.count("host") > 1:
        raise XenAPIError("JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS")
    if _vms_running(db):
        raise XenAPIError("JOINING_HOST_CANNOT_HAVE_RUNNING_VMS")
    if any(f["current_operations"] for _, f in db.records("VM")):
        raise XenAPIError(
            "JOINING_HOST_CANNOT_HAVE_VMS_WITH_CURRENT_OPERATIONS")
    if not force:
        mine = [me["software_version"].get(k, "") for k in HOMOGENEITY_KEYS]
        theirs = [master_host["software_version"].get(k, "")
                  for k in HOMOGENEITY_KEYS]
        if mine != theirs:
            raise XenAPIError("HOSTS_NOT_HOMOGENEOUS",
                              "software version differs")
    if any(f["shared"] and not f["is_tools_sr"]
           for _, f in db.records("SR")):
        raise XenAPIError("JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS")
    if (int(master_host["API_version_major"]),
            int(master_host["API_version_minor"])) != \
            (me["API_version_major"], me["API_version_minor"]):
        raise XenAPIError("POOL_JOINING_HOST_MUST_HAVE_SAME_API_VERSION",
                          "%s.%s" % (me["API_version_major"],
                                     me["API_version_minor"]),
                          "%s.%s" % (master_host["API_version_major"],
                                     master_host["API_version_minor"]))
    # A joiner of a pool with external authentication has joined the
    # same directory itself (its computer account is its own).
    if me["external_auth_type"] != master_host["external_auth_type"] or \
            me["external_auth_service_name"].lower() != \
            master_host["external_auth_service_name"].lower():
        raise XenAPIError("POOL_JOINING_EXTERNAL_AUTH_MISMATCH")


def own_records(db, host_ref):
    """[table, ref, fields] of what this host brings to a pool: itself,
    its metrics and CPUs, its control domain, its PIFs and their
    networks, its local SRs with their PBDs and VDIs."""
    host = db.fields("host", host_ref)
    out = [("host", host_ref, host)]

    def add(table, ref):
        if ref != NULL_REF and db.exists(table, ref):
            out.append((table, ref, db.fields(table, ref)))

    add("host_metrics", host["metrics"])
    for cpu in db.where("host_cpu", host=host_ref):
        add("host_cpu", cpu)
    dom0 = host["control_domain"]
    add("VM", dom0)
    if db.exists("VM", dom0):
        add("VM_metrics", db.get("VM", dom0, "metrics"))
    for pif in db.where("PIF", host=host_ref):
        fields = db.fields("PIF", pif)
        add("network", fields["network"])
        add("PIF_metrics", fields["metrics"])
        add("PIF", pif)
    for sr in _local_srs(db, host_ref):
        add("SR", sr)
        for pbd in db.where("PBD", SR=sr):
            add("PBD", pbd)
        for vdi in db.where("VDI", SR=sr):
            add("VDI", vdi)
    # Metrics and networks before their owners: refs resolve on creation.
    order = ["host_metrics", "VM_metrics", "PIF_metrics", "network", "SR",
             "host", "host_cpu", "VM", "PIF", "PBD", "VDI"]
    out.sort(key=lambda rec: order.index(rec[0]))
    return [[table, ref, dict(fields)] for table, ref, fields in out]


def introduce(db, records):
    """On the master: create the joiner's objects.  Its networks that
    share a bridge with one of the pool's are that network."""
    if any(db.exists("host", ref)
           or fields.get("uuid") in db.table("host").by_uuid
           for table, ref, fields in records if table == "host"):
        raise XenAPIError("OPERATION_NOT_ALLOWED",
                          "Host is already part of a pool")
    bridges = {f["bridge"]: ref for ref, f in db.records("network")}
    mapping = {}
    for table, ref, fields in records:
        if table == "network" and fields.get("bridge") in bridges:
            mapping[ref] = bridges[fields["bridge"]]
        else:
            mapping[ref] = ref
    rows = []
    for table, ref, fields in records:
        if mapping[ref] != ref:
            continue
        cls = MODEL.cls(table)
        if db.exists(table, ref) or \
                fields.get("uuid") in db.table(table).by_uuid:
            raise XenAPIError("OPERATION_NOT_ALLOWED",
                              "%s %s is already in the pool"
                              % (table, fields.get("uuid")))
        row = {}
        for field in cls.stored_fields:
            if field.name in fields:
                row[field.name] = _remap(field.type.coerce(fields[field.name]),
                                         field.type, mapping, db)
        rows.append((table, ref, row))
    # The joiner is restarting: live and enabled once it says pool.hello.
    for table, ref, row in rows:
        if table == "host":
            row["enabled"] = False
        elif table == "host_metrics":
            row["live"] = False
    # Every check passed and every value is well typed: all or nothing.
    for table, ref, row in rows:
        db.create(table, row, ref=ref)
    return [ref for _, ref, _ in rows]


def _remap(value, type_, mapping, db):
    if isinstance(type_, Ref):
        ref = mapping.get(value, value)
        if ref == NULL_REF or ref in mapping.values() \
                or db.exists(type_.cls, ref):
            return ref
        return NULL_REF
    if isinstance(type_, SetType) and isinstance(type_.elem, Ref):
        kept = [_remap(v, type_.elem, mapping, db) for v in value]
        return [v for v in kept if v != NULL_REF]
    return value


@defer.inlineCallbacks
def join(server, master_address, username, password, force):
    """Run on the joiner; fires once the master holds this host."""
    db, identity = server.db, server.identity
    client = PeerClient(server.reactor, master_address)
    try:
        session = yield client.call("session.login_with_password", username,
                                    password, "1.0", "txxapi pool.join")
    except PeerUnreachable as e:
        log.warn("pool.join: {error}", error=e)
        raise XenAPIError("JOINING_HOST_CONNECTION_FAILED")
    try:
        pools = yield client.call("pool.get_all", session)
        master_ref = yield client.call("pool.get_master", session, pools[0])
        master_host = yield client.call("host.get_record", session,
                                        master_ref)
        local_checks(db, identity.host_ref, master_host, force)
        # A pool with HA on takes no new host (XAPI's).
        if (yield client.call("pool.get_ha_enabled", session, pools[0])):
            raise XenAPIError("HA_IS_ENABLED")
        secret = yield client.call("pool.initial_auth", session)
        pool_session = yield client.call(
            "session.slave_login", master_ref, secret)
        records = own_records(db, identity.host_ref)
        placed = yield client.call("pool.introduce_host", pool_session,
                                   json.dumps(records, default=str),
                                   timeout=INTRODUCE_TIMEOUT)
        client.call("session.logout", pool_session).addErrback(
            lambda _: None)
    except PeerUnreachable as e:
        log.warn("pool.join: {error}", error=e)
        raise XenAPIError("JOINING_HOST_SERVICE_FAILED")
    finally:
        client.call("session.logout", session).addErrback(lambda _: None)
    write_atomically(os.path.join(server.data_dir, "ptoken"), secret + "\n")
    pool_database.write_config(server.data_dir, json.loads(placed))
    pool_role.write(server.data_dir,
                    pool_role.Role(pool_role.SLAVE, master_address))
    log.info("joined the pool of {master}; restarting as a slave",
             master=master_address)
    restart(server.reactor)


def eject_here(server):
    """On the ejected host: forget the pool, restart as a fresh master."""
    server.persistence.leave().addErrback(
        lambda f: log.failure("pool: leaving the pool's log", f))
    pool_role.write(server.data_dir, pool_role.Role(pool_role.MASTER))
    os.unlink(os.path.join(server.data_dir, "ptoken"))
    server.pool_database.forget_pool()
    server.extauth.forget()
    for name in DATABASE_FILES:
        path = os.path.join(server.data_dir, name)
        if os.path.isdir(path):
            # Dropped as the process stops: the database may still write.
            server.reactor.addSystemEventTrigger(
                "after", "shutdown", shutil.rmtree, path, True)
    log.info("ejected from the pool; restarting as a fresh master")
    restart(server.reactor)


# The exit status of a process that stopped to start again in a new role
# (EX_TEMPFAIL): scripts/serve starts it again on this status alone, so a
# stop asked for by the operator stays a stop.
RESTART_STATUS = 75


def restart(reactor, delay=RESTART_DELAY):
    """Stop the process once the answer has left: it starts again in its
    new role (the role is read once at start, as XAPI's)."""
    atexit.register(_exit_for_restart)
    reactor.callLater(delay, reactor.stop)


def _exit_for_restart():
    # Registered last, so run first at exit: flush what logging holds,
    # then leave with the status that asks for a restart.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(RESTART_STATUS)


def forget(db, host_ref):
    """On the master: drop a host and the objects only it had."""
    doomed = []
    fields = db.fields("host", host_ref)
    for sr in _local_srs(db, host_ref):
        doomed += [("VDI", v) for v in db.where("VDI", SR=sr)]
        doomed += [("PBD", p) for p in db.where("PBD", SR=sr)]
        doomed.append(("SR", sr))
    for pbd in db.where("PBD", host=host_ref):
        if ("PBD", pbd) not in doomed:
            doomed.append(("PBD", pbd))
    for pif in db.where("PIF", host=host_ref):
        doomed.append(("PIF_metrics", db.get("PIF", pif, "metrics")))
        doomed.append(("PIF", pif))
    for vm in db.where("VM", resident_on=host_ref):
        if db.get("VM", vm, "is_control_domain"):
            doomed.append(("VM_metrics", db.get("VM", vm, "metrics")))
            doomed += [("console", c) for c in db.where("console", VM=vm)]
            doomed.append(("VM", vm))
    doomed += [("host_cpu", c) for c in db.where("host_cpu", host=host_ref)]
    doomed.append(("host_metrics", fields["metrics"]))
    doomed.append(("host", host_ref))
    for table, ref in doomed:
        if ref != NULL_REF and db.exists(table, ref):
            db.delete(table, ref)
