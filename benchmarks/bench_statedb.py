"""
state.db write and load times for 10,000 and 100,000 objects.

    python3 benchmarks/bench_statedb.py [--dir DIR] [--sizes 10000,100000]
                                        [--json]

A third of the objects are VMs (every VM field set, maps and sets filled
like a real pool's), the rest VBDs and VIFs attached to them.  Prints the
capture time (reactor-thread cost), write time (worker thread, including
fsync), load time and file size.  Use --dir on the disk the database will
live on.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from txxapi.datamodel import MODEL  # noqa: E402
from txxapi.db import statedb  # noqa: E402
from txxapi.db.memory import Database  # noqa: E402
from txxapi.values import DateTime, new_ref  # noqa: E402


def populate(db, objects):
    host = db.create("host", {"name_label": "host 1",
                              "other_config": {"agent start": "yes"}})
    now = DateTime.now()
    vms = max(1, objects // 3)
    devices = objects - vms
    vm_refs = []
    for i in range(vms):
        vm_refs.append(db.create("VM", {
            "name_label": "vm %05d" % i,
            "name_description": "a test VM with a longer description",
            "power_state": "Running",
            "resident_on": host,
            "memory_static_max": 4 << 30,
            "memory_dynamic_max": 4 << 30,
            "memory_dynamic_min": 2 << 30,
            "memory_static_min": 1 << 30,
            "VCPUs_max": 4,
            "VCPUs_at_startup": 2,
            "VCPUs_params": {"weight": "256"},
            "other_config": {"folder": "/prod/web", "owner": "ops team",
                             "install-methods": "cdrom,nfs,http,ftp",
                             "base_template_name": "Debian Bookworm 12"},
            "platform": {"acpi": "1", "apic": "true", "pae": "true",
                         "viridian": "false", "nx": "true"},
            "HVM_boot_params": {"order": "cdn"},
            "tags": ["web", "linux", "production"],
            "blocked_operations": {"destroy": "protected"},
            "domid": i + 1,
            "snapshot_time": now,
            "xenstore_data": {"vm-data/mmio-hole-size": "268435456"},
        }))
    for i in range(devices):
        vm = vm_refs[i % vms]
        if i % 2:
            db.create("VBD", {"VM": vm, "device": "xvd%s" % "abcd"[i % 4],
                              "userdevice": str(i % 4), "bootable": i % 4 == 1,
                              "mode": "RW", "type": "Disk",
                              "other_config": {"owner": "true"},
                              "VDI": new_ref()})
        else:
            db.create("VIF", {"VM": vm, "device": str(i % 4),
                              "MAC": "02:00:00:%02x:%02x:%02x" % (
                                  (i >> 16) & 255, (i >> 8) & 255, i & 255),
                              "MTU": 1500, "network": new_ref(),
                              "other_config": {"ethtool-gso": "off"}})


def run(objects, directory):
    db = Database(MODEL)
    t0 = time.perf_counter()
    populate(db, objects)
    t_pop = time.perf_counter() - t0
    path = os.path.join(directory, "state-%d.db" % objects)

    t0 = time.perf_counter()
    snap = statedb.capture(db)
    t_capture = time.perf_counter() - t0

    t0 = time.perf_counter()
    size = statedb.write(snap, path)
    t_write = time.perf_counter() - t0

    fresh = Database(MODEL)
    t0 = time.perf_counter()
    statedb.load(path, fresh)
    t_load = time.perf_counter() - t0
    assert sum(len(t.rows) for t in fresh.tables.values()) == snap.count()

    return {"objects": snap.count(), "capture_s": t_capture,
            "write_s": t_write, "load_s": t_load, "size_mb": size / 1e6,
            "populate_s": t_pop}


def show(f):
    print("%7d objects: capture %6.3f s  write %6.2f s  load %6.2f s  "
          "size %6.1f MB  (populate %.1f s)"
          % (f["objects"], f["capture_s"], f["write_s"], f["load_s"],
             f["size_mb"], f["populate_s"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="where to write the files "
                        "(default: a temporary directory)")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as one JSON line")
    args = parser.parse_args()
    directory = args.dir or tempfile.mkdtemp(prefix="bench-statedb-")
    try:
        figures = []
        for n in args.sizes.split(","):
            figures.append(run(int(n), directory))
            if not args.json:
                show(figures[-1])
        if args.json:
            print(json.dumps(figures))
    finally:
        if not args.dir:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
