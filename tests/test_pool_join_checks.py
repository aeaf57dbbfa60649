"""
XAPI's pre-join checks on the joiner (txxapi.pool.join.local_checks),
against an in-process server's database: each refusal with its error,
in XAPI's order, and join_force skipping only the homogeneity check.
"""

import pytest

from tests.support.inprocess import make_server
from txxapi.errors import XenAPIError
from txxapi.pool.join import local_checks
from txxapi.values import NULL_REF


@pytest.fixture
def joiner(tmp_path):
    server, _clock = make_server(tmp_path)
    return server


def master_like(server, **changes):
    """The master's host record as the joiner reads it: another host of
    the same make."""
    record = dict(server.db.fields("host", server.host_ref))
    record["uuid"] = "0a1b2c3d-0000-4000-8000-000000000001"
    record["software_version"] = dict(record["software_version"])
    record.update(changes)
    return record


def refusal(server, master, force=False):
    with pytest.raises(XenAPIError) as e:
        local_checks(server.db, server.host_ref, master, force)
    return e.value.description


def test_a_fresh_host_may_join(joiner):
    local_checks(joiner.db, joiner.host_ref, master_like(joiner), False)


def test_itself(joiner):
    master = master_like(joiner)
    master["uuid"] = joiner.db.get("host", joiner.host_ref, "uuid")
    assert refusal(joiner, master) == [
        "OPERATION_NOT_ALLOWED", "Host cannot become slave of itself"]


def test_api_version(joiner):
    assert refusal(joiner, master_like(joiner, API_version_minor=20)) == [
        "POOL_JOINING_HOST_MUST_HAVE_SAME_API_VERSION", "2.21", "2.20"]


def test_software_differs_unless_forced(joiner):
    master = master_like(joiner)
    master["software_version"]["platform_version"] = "9.9.9"
    assert refusal(joiner, master) == ["HOSTS_NOT_HOMOGENEOUS",
                                       "software version differs"]
    local_checks(joiner.db, joiner.host_ref, master, True)


def test_shared_sr(joiner):
    db = joiner.db
    local = [sr for sr, f in db.records("SR") if not f["is_tools_sr"]][0]
    db.update("SR", local, {"shared": True})
    assert refusal(joiner, master_like(joiner)) == [
        "JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS"]


def test_vm_with_current_operations(joiner):
    db = joiner.db
    vm = db.create("VM", {"name_label": "busy", "power_state": "Halted",
                          "current_operations": {"OpaqueRef:t": "start"}})
    assert refusal(joiner, master_like(joiner)) == [
        "JOINING_HOST_CANNOT_HAVE_VMS_WITH_CURRENT_OPERATIONS"]
    db.update("VM", vm, {"power_state": "Running"})
    # Running comes first in XAPI's order.
    assert refusal(joiner, master_like(joiner)) == [
        "JOINING_HOST_CANNOT_HAVE_RUNNING_VMS"]


def test_master_of_other_hosts_first(joiner):
    db = joiner.db
    db.create("VM", {"name_label": "up", "power_state": "Running"})
    db.create("host", {"name_label": "other", "metrics": NULL_REF})
    assert refusal(joiner, master_like(joiner)) == [
        "JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS"]


def test_external_auth_must_match(joiner):
    """The same type and service name (of any case) as the master's."""
    db = joiner.db
    db.update("host", joiner.host_ref, {"external_auth_type": "AD",
                                        "external_auth_service_name":
                                            "corp.example.test"})
    for changes in ({"external_auth_type": "",
                     "external_auth_service_name": ""},
                    {"external_auth_type": "AD",
                         "external_auth_service_name": "other.test"}):
        assert refusal(joiner, master_like(joiner, **changes)) == [
            "POOL_JOINING_EXTERNAL_AUTH_MISMATCH"]
    local_checks(db, joiner.host_ref, master_like(
        joiner, external_auth_type="AD",
        external_auth_service_name="CORP.example.TEST"), False)
