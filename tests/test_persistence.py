"""
Durability against a real server: an acknowledged write survives kill -9,
and a restart on the same data directory keeps every object and UUID.
"""

import os
import threading
import time

import XenAPI

from tests.support.servers import PASSWORD, USER, RunningServer


def _net(label):
    return {"name_label": label, "name_description": "d-" + label,
            "MTU": "1500", "other_config": {"writer": label}}


def test_restart_keeps_uuids_and_objects(tmp_path):
    s = RunningServer(str(tmp_path / "data")).start()
    try:
        x = s.session().xenapi
        pool = x.pool.get_all()[0]
        host = x.pool.get_master(pool)
        before = (x.pool.get_uuid(pool), x.host.get_uuid(host),
                  x.host.get_record(host)["host_CPUs"])
        net = x.network.create(_net("kept"))
        net_uuid = x.network.get_uuid(net)
    finally:
        s.stop()
    s.start()
    try:
        x = s.session().xenapi
        pool = x.pool.get_all()[0]
        host = x.pool.get_master(pool)
        after = (x.pool.get_uuid(pool), x.host.get_uuid(host),
                 x.host.get_record(host)["host_CPUs"])
        assert after == before
        net = x.network.get_by_uuid(net_uuid)
        assert x.network.get_record(net)["other_config"] == {
            "writer": "kept"}
        assert len(x.host.get_all()) == 1 and len(x.pool.get_all()) == 1
    finally:
        s.stop()


def test_acknowledged_writes_survive_sigkill(tmp_path):
    s = RunningServer(str(tmp_path / "data")).start()
    acknowledged = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n):
        session = XenAPI.Session(s.http_url)
        session.xenapi.login_with_password(USER, PASSWORD, "1.0", "w")
        i = 0
        while not stop.is_set():
            label = "w%d-%d" % (n, i)
            try:
                session.xenapi.network.create(_net(label))
            except Exception:
                return  # the server died under us
            with lock:
                acknowledged.append(label)
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    s.kill()
    stop.set()
    for t in threads:
        t.join(30)
    with lock:
        acked = list(acknowledged)
    assert len(acked) >= 300

    s.start()
    try:
        x = s.session().xenapi
        found = {r["name_label"]: r for r in
                 x.network.get_all_records().values()}
        missing = [label for label in acked if label not in found]
        assert missing == []
        for label, rec in found.items():
            if label.startswith("w"):
                # Each create is all or nothing.
                assert rec["name_description"] == "d-" + label
                assert rec["other_config"] == {"writer": label}
        assert os.listdir(os.path.join(s.data_dir, "db"))
    finally:
        s.stop()
