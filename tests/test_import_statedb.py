"""A real XAPI state.db taken over at first start and served over the API."""

from tests.support.servers import RunningServer
from tests.test_statedb import XAPI_STATE_DB


def test_imported_objects_are_served(tmp_path):
    path = tmp_path / "xapi-state.db"
    path.write_text(XAPI_STATE_DB, encoding="utf-8")
    s = RunningServer(str(tmp_path / "data"),
                      extra_args=["--import-db", str(path)]).start()
    try:
        x = s.session().xenapi
        vm = x.VM.get_by_uuid("6f0c2f3e-9c57-4f6a-8e0b-1b2c3d4e5f60")
        rec = x.VM.get_record(vm)
        assert rec["name_label"] == "web01"
        assert rec["other_config"]["base_template_name"] == \
            "Debian Bookworm 12"
        assert rec["tags"] == ["web", "linux"]
        assert rec["current_operations"] == {}
        vbd = x.VBD.get_record(rec["VBDs"][0])
        assert vbd["device"] == "xvda" and vbd["VM"] == vm
        pool = x.pool.get_all_records()
        assert [p["name_label"] for p in pool.values()] == ["my pool"]
        host = x.pool.get_master(list(pool)[0])
        assert x.host.get_uuid(host) == "8f1f3a0e-0000-4000-8000-000000000002"
        assert x.session.get_this_host(s.session()._session) == host
    finally:
        s.stop()
    # The import is in this server's own database now.
    s.extra_args = []
    s.start()
    try:
        x = s.session().xenapi
        assert x.VM.get_by_uuid("6f0c2f3e-9c57-4f6a-8e0b-1b2c3d4e5f60")
    finally:
        s.stop()
