"""RBAC in process: guarded map keys, task ownership, Async calls, the
role objects and the audit log."""

import re

import pytest

from tests.support.inprocess import call, login, make_server
from txxapi.api.rbac import permissions_of
from txxapi.errors import XenAPIError


@pytest.fixture
def srv(tmp_path):
    server, _ = make_server(tmp_path)
    yield server
    server.stop()


def role_session(server, role, name="someone", sid="S-1-5-21-7"):
    return server.sessions.create(name, is_local_superuser=False, sid=sid,
                                  permissions=permissions_of(role))


def denied(server, method, *params):
    with pytest.raises(XenAPIError) as e:
        call(server, method, *params)
    assert e.value.description[0] == "RBAC_PERMISSION_DENIED", \
        e.value.description
    return e.value.description


def a_vm(server):
    root = login(server)
    [template] = call(server, "VM.get_by_name_label", root,
                      "Other install media")
    return root, call(server, "VM.clone", root, template, "rbac")


def test_guarded_map_keys(srv):
    """vm-operator may set a VM's folder key though not its other keys;
    pci needs pool-admin, a wildcard key matches its prefix."""
    root, vm = a_vm(srv)
    op = role_session(srv, "vm-operator")
    call(srv, "VM.add_to_other_config", op, vm, "folder", "/a")
    call(srv, "VM.add_to_other_config", op, vm,
         "XenCenter.CustomFields.colour", "red")
    assert denied(srv, "VM.add_to_other_config", op, vm, "plain", "x") == [
        "RBAC_PERMISSION_DENIED", "vm.add_to_other_config",
        "No permission in user session. (Roles with this permission: "
        "pool-admin, pool-operator, vm-power-admin, vm-admin)"]
    admin = role_session(srv, "vm-admin")
    assert denied(srv, "VM.add_to_other_config", admin, vm, "pci", "x") == [
        "RBAC_PERMISSION_DENIED", "vm.add_to_other_config/key:pci",
        "No permission in user session. (Roles with this permission: "
        "pool-admin)"]
    call(srv, "VM.remove_from_other_config", op, vm, "folder")
    denied(srv, "VM.remove_from_platform", admin, vm, "hvm_serial")
    other = call(srv, "VM.get_other_config", root, vm)
    assert other["XenCenter.CustomFields.colour"] == "red"
    assert "folder" not in other and "plain" not in other


def test_async_calls_are_checked_before_a_task_exists(srv):
    root, vm = a_vm(srv)
    reader = role_session(srv, "read-only")
    tasks = call(srv, "task.get_all", root)
    denied(srv, "Async.VM.destroy", reader, vm)
    assert call(srv, "task.get_all", root) == tasks
    assert srv.db.exists("VM", vm)


def test_task_of_another_needs_destroy_any(srv):
    alice = role_session(srv, "vm-admin", "alice", "S-1-5-21-100")
    bob = role_session(srv, "vm-admin", "bob", "S-1-5-21-200")
    alice_again = role_session(srv, "read-only", "alice", "S-1-5-21-100")
    task = call(srv, "task.create", alice, "mine", "")
    assert denied(srv, "task.cancel", bob, task) == [
        "RBAC_PERMISSION_DENIED", "task.destroy/any",
        "No permission in user session. (Roles with this permission: "
        "pool-admin, pool-operator)"]
    denied(srv, "task.destroy", bob, task)
    assert srv.db.exists("task", task)
    # The same user in another session owns it too.
    call(srv, "task.set_progress", alice_again, task, 0.5)
    assert srv.db.fields("task", task)["progress"] == 0.5
    call(srv, "task.set_status", alice_again, task, "success")
    operator = role_session(srv, "pool-operator", "carol", "S-1-5-21-300")
    call(srv, "task.destroy", operator, task)
    assert not srv.db.exists("task", task)


def test_role_objects_carry_every_permission(srv):
    root = login(srv)
    [vm_op] = call(srv, "role.get_by_name_label", root, "vm-operator")
    names = {call(srv, "role.get_name_label", root, r)
             for r in call(srv, "role.get_subroles", root, vm_op)}
    assert "http/connect_console" in names
    assert "vm.add_to_other_config/key:folder" in names
    assert "http/connect_console/host_console" not in names
    assert "task.destroy/any" not in names
    [perm] = call(srv, "role.get_by_name_label", root,
                  "vm.add_to_other_config/key:xencenter.customfields.*")
    assert call(srv, "role.get_subroles", root, perm) == []
    [pool_op] = call(srv, "role.get_by_name_label", root, "pool-operator")
    subroles = call(srv, "role.get_subroles", root, pool_op)
    labels = {call(srv, "role.get_name_label", root, r) for r in subroles}
    assert {"task.destroy/any", "http/get_system_status"} <= labels


AUDIT = re.compile(
    r"^\[\d{8}T\d\d:\d\d:\d\d\.\d{3}Z\|audit\|[^|]*\|\d+ [^|]*\|([^|]*)\|"
    r"audit\] \('trackid=[0-9a-f]{32}' '([^']*)' '([^']*)' '(ALLOWED|DENIED)'"
    r" '([^']*)' '(API|HTTP)' '([^']*)' (\(.*\))\)$")


def test_audit_log_of_role_sessions(srv, tmp_path):
    root, vm = a_vm(srv)
    call(srv, "VM.set_name_label", root, vm, "by root")
    admin = role_session(srv, "vm-admin", "alice", "S-1-5-21-9")
    call(srv, "VM.set_name_label", admin, vm, "by alice")
    call(srv, "VM.get_name_label", admin, vm)
    denied(srv, "VM.add_to_other_config", admin, vm, "pci", "0/0000:00:01.0")
    with pytest.raises(XenAPIError):
        call(srv, "VM.add_to_other_config", admin, vm, "folder", "/a")
        call(srv, "VM.add_to_other_config", admin, vm, "folder", "/b")
    with open(srv.audit.path) as f:
        lines = [AUDIT.match(line.rstrip("\n")) for line in f]
    assert all(lines), lines
    got = [m.groups()[1:7] for m in lines]
    assert got == [
        ("S-1-5-21-9", "alice", "ALLOWED", "OK", "API", "VM.set_name_label"),
        ("S-1-5-21-9", "alice", "DENIED", "", "API",
         "VM.add_to_other_config"),
        ("S-1-5-21-9", "alice", "ALLOWED", "OK", "API",
         "VM.add_to_other_config"),
        ("S-1-5-21-9", "alice", "ALLOWED",
         "ERROR:MAP_DUPLICATE_KEY: [ VM; other_config; %s; folder ]"
         % srv.db.fields("VM", vm)["uuid"], "API", "VM.add_to_other_config"),
    ]
    uuid = srv.db.fields("VM", vm)["uuid"]
    # The object's name as the call left it, as XAPI logs it.
    assert lines[0].group(8) == "(('self' 'by alice' '%s' '%s'))" % (
        uuid, vm)
