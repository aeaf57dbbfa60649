"""
What the benchmark items share: result rows, real servers on loopback,
process measurements, a small RPC client and a populated database.
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.request

from tests.support.servers import (  # noqa: F401  (re-exported)
    PASSWORD, REPO, USER, LoadServer, RunningServer, free_port,
    insecure_context)

NOT_AVAILABLE = "not available yet"


class Results:
    """The rows of the table: one figure each, with its unit and, where it
    has one, the baseline it is compared with in the same run."""

    def __init__(self):
        self.rows = []
        self.sweeps = {}   # chart name -> {series: [(x, y)]}

    def add(self, item, figure, value, unit, baseline=None,
            baseline_name=None, ratio=None, note=""):
        if ratio is None and baseline and value is not None:
            ratio = value / baseline
        row = {"item": item, "figure": figure, "value": value, "unit": unit,
               "ratio": ratio, "baseline": baseline_name, "note": note}
        self.rows.append(row)
        print_row(row)
        return row

    def unavailable(self, item, figure, why=NOT_AVAILABLE):
        return self.add(item, figure, None, "", note=why)

    def point(self, chart, series, x, y):
        self.sweeps.setdefault(chart, {}).setdefault(series, []).append(
            (x, y))


def format_value(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if abs(v) >= 100 or v == int(v):
        return "{:,.0f}".format(v)
    return "%.3g" % v


def print_row(row):
    ratio = "" if row["ratio"] is None else "%.2fx" % row["ratio"]
    base = ("vs " + row["baseline"]) if row["baseline"] else ""
    print("%-66s %14s %-6s %7s  %s%s" % (
        row["figure"][:66], format_value(row["value"]), row["unit"], ratio,
        base, ("  [%s]" % row["note"]) if row["note"] else ""), flush=True)


# -- processes ----------------------------------------------------------------

def raise_fd_limit():
    """1,000 clients need 1,000 sockets on each side; children inherit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def rss_mib(pid, field="VmRSS"):
    """Resident memory of a process now, or at its peak (field="VmHWM")."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def python_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def module_cmd(module, *args):
    return [sys.executable, "-m", module] + [str(a) for a in args]


def wait_http(url, proc, timeout=60):
    """Wait until url answers (any HTTP status) or proc has died."""
    deadline = time.monotonic() + timeout
    ctx = insecure_context()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s" % (proc.args, proc.returncode))
        try:
            urllib.request.urlopen(url, timeout=2, context=ctx).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s did not answer in %d s" % (url, timeout))


def stop_process(proc, timeout=20):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- a small RPC client ---------------------------------------------------------

class RPCError(Exception):
    """A XenAPI failure; description is XAPI's [code, params...]."""

    def __init__(self, description):
        Exception.__init__(self, description)
        self.description = description

    @classmethod
    def from_jsonrpc(cls, error):
        return cls([error.get("message")] + list(error.get("data") or []))


def jsonrpc(url, method, params, timeout=600):
    """One JSON-RPC call; (result, response size in bytes)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": params}).encode()
    req = urllib.request.Request(url + "/jsonrpc", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout,
                                context=insecure_context()) as r:
        raw = r.read()
    reply = json.loads(raw)
    if "error" in reply:
        raise RPCError.from_jsonrpc(reply["error"])
    return reply["result"], len(raw)


class KeepAliveClient:
    """JSON-RPC over one keep-alive plain HTTP connection."""

    def __init__(self, port, timeout=120):
        import http.client
        self.conn = http.client.HTTPConnection("127.0.0.1", port,
                                               timeout=timeout)

    def call(self, method, *params):
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                           "params": list(params)})
        self.conn.request("POST", "/jsonrpc", body,
                          {"Content-Type": "application/json"})
        reply = json.loads(self.conn.getresponse().read())
        if "error" in reply:
            raise RPCError.from_jsonrpc(reply["error"])
        return reply["result"]

    def close(self):
        self.conn.close()


def percentile(sorted_values, p):
    """The p-th percentile of sorted values (nearest rank); NaN of none."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(round(
        p / 100.0 * (len(sorted_values) - 1))))]


def xmlrpc_body(method, params):
    import xmlrpc.client
    return xmlrpc.client.dumps(tuple(params), method).encode()


def xmlrpc_raw(url, method, params, timeout=600):
    """One XML-RPC call; the raw response body."""
    req = urllib.request.Request(url + "/", data=xmlrpc_body(method, params),
                                 headers={"Content-Type": "text/xml"})
    with urllib.request.urlopen(req, timeout=timeout,
                                context=insecure_context()) as r:
        return r.read()


def login(url):
    return jsonrpc(url, "session.login_with_password",
                   [USER, PASSWORD, "1.0", "benchmarks"])[0]


# -- a populated data dir ---------------------------------------------------------

def local_sr_session(url):
    """A session on the server at url and its local SR's ref."""
    session = login(url)
    sr = jsonrpc(url, "SR.get_by_name_label",
                 [session, "Local storage"])[0][0]
    return session, sr


def bootstrap_data_dir(base, name="data"):
    """A data dir as a first start leaves it (pool, host, dom0, roles),
    stopped cleanly so that everything is in db/state.db."""
    data = os.path.join(base, name)
    server = LoadServer(data)
    server.start()
    server.stop()
    return data


def populate(db, vms):
    """Add ``vms`` halted VMs, each with its metrics, two VBDs (disk and CD)
    and a VIF on the management network, to a database that holds a
    bootstrapped host; returns the VM refs."""
    from txxapi.values import DateTime, NULL_REF
    host = db.refs("host")[0]
    network = db.refs("network")[0]
    now = DateTime.now()
    refs = []
    for i in range(vms):
        metrics = db.create("VM_metrics", {
            "memory_actual": 0, "VCPUs_number": 2, "start_time": now,
            "last_updated": now, "other_config": {}})
        vm = db.create("VM", {
            "name_label": "vm-%05d" % i,
            "name_description": "benchmark VM %d" % i,
            "power_state": "Halted",
            "affinity": host,
            # Small enough for 100 of them to run on the simulated host.
            "memory_static_max": 512 << 20, "memory_dynamic_max": 512 << 20,
            "memory_dynamic_min": 256 << 20, "memory_static_min": 256 << 20,
            "VCPUs_max": 2, "VCPUs_at_startup": 2,
            "other_config": {"folder": "/bench/%d" % (i % 10),
                             "owner": "ops", "base_template_name":
                             "Debian Bookworm 12"},
            "platform": {"acpi": "1", "apic": "true", "pae": "true",
                         "viridian": "false", "nx": "true"},
            "HVM_boot_params": {"order": "cdn"},
            "tags": ["bench", "group-%d" % (i % 100)],
            "metrics": metrics,
        })
        for userdevice, kind in (("0", "Disk"), ("3", "CD")):
            db.create("VBD", {
                "VM": vm, "VDI": NULL_REF, "userdevice": userdevice,
                "bootable": kind == "Disk", "mode": "RW" if kind == "Disk"
                else "RO", "type": kind, "empty": kind == "CD",
                "other_config": {"owner": "true"}})
        db.create("VIF", {
            "VM": vm, "network": network, "device": "0", "MTU": 1500,
            "MAC": "02:00:%02x:%02x:%02x:%02x" % (
                (i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255),
            "other_config": {}})
        refs.append(vm)
    return refs


def populated_data_dir(template, target, vms):
    """Copy the bootstrapped data dir ``template`` to ``target`` and add
    ``vms`` VMs to its state.db (built in-process, written with statedb).
    Returns the seconds the snapshot took to write."""
    from txxapi.datamodel import MODEL
    from txxapi.db import statedb
    from txxapi.db.memory import Database
    if os.path.exists(target):
        shutil.rmtree(target)
    shutil.copytree(template, target)
    path = os.path.join(target, "db", "state.db")
    db = Database(MODEL)
    statedb.load(path, db)
    populate(db, vms)
    t0 = time.perf_counter()
    statedb.write(statedb.capture(db), path)
    elapsed = time.perf_counter() - t0
    # The clean stop left no log records after the snapshot we replace.
    for name in os.listdir(os.path.join(target, "db")):
        if name.startswith("redo-"):
            os.unlink(os.path.join(target, "db", name))
    return elapsed
