"""Messages (alerts) against a real server: create, read, filter, events,
destroy, and survival across a restart."""

import XenAPI
import pytest

from tests.support.servers import RunningServer


def test_message_life(tmp_path):
    s = RunningServer(str(tmp_path / "data")).start()
    try:
        x = s.session().xenapi
        host_uuid = x.host.get_uuid(x.host.get_all()[0])
        event_from = getattr(x.event, "from")
        token = event_from(["message"], "", 0.0)["token"]
        ref = x.message.create("TEST_ALERT", "3", "Host", host_uuid, "hello")
        rec = x.message.get_record(ref)
        assert rec["name"] == "TEST_ALERT" and rec["priority"] == "3"
        assert rec["obj_uuid"] == host_uuid and rec["cls"] == "Host"
        assert x.message.get_by_uuid(rec["uuid"]) == ref
        assert ref in x.message.get_all_records()
        assert list(x.message.get("Host", host_uuid,
                                  "19700101T00:00:00Z")) == [ref]
        assert list(x.message.get_all_records_where(
            'field "name"="TEST_ALERT"')) == [ref]
        assert x.message.get_all_records_where('field "name"="x"') == {}
        batch = event_from(["message"], token, 5.0)
        assert [(e["operation"], e["ref"]) for e in batch["events"]] == [
            ("add", ref)]
        with pytest.raises(XenAPI.Failure) as e:
            x.message.create("X", "1", "VM", "no-such-uuid", "")
        assert e.value.details == ["UUID_INVALID", "VM", "no-such-uuid"]
        keep = x.message.create("KEPT", "5", "Host", host_uuid, "")
    finally:
        s.stop()
    s.start()
    try:
        x = s.session().xenapi
        assert set(x.message.get_all()) == {ref, keep}
        x.message.destroy(ref)
        assert list(x.message.get_all_records()) == [keep]
    finally:
        s.stop()
