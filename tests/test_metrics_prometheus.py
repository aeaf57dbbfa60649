"""
A real Prometheus (Debian's) scraping a running server's /metrics every
second with the server's scrape token, and the series it stores checked
against the server's own /rrd_updates; the token option's checks.
"""

import json
import os
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
import uuid

import pytest
from twisted.python import usage

from tests.support.api import wait_until
from tests.support.pool import host_address
from tests.support.servers import RunningServer
from tests import test_metrics_http as http_tests
from tests.test_metrics_http import STEP, column, known, updates
from txxapi.tap import Options

PROMETHEUS_ADDRESS = 41     # a loopback address no other test takes

# The API, its session and a busy VM, as the HTTP tests make them (on
# this module's server).
client, x, sid, vm = (http_tests.client, http_tests.x, http_tests.sid,
                      http_tests.vm)


def free_port_on(address):
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("token") / "scrape-token")
    with open(path, "w") as f:
        f.write("prom-%s\n" % uuid.uuid4())
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, token_file):
    base = str(tmp_path_factory.mktemp("scraped"))
    running = RunningServer(os.path.join(base, "data"), extra_args=[
        "--simulator-op-time", "0.01", "--metrics-interval", str(STEP),
        "--metrics-token-file", token_file])
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, server, token_file):
    """Prometheus on a loopback address of this run's net, scraping the
    server every second with the token; the base URL of its API."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus (Debian's package) is not installed")
    base = tmp_path_factory.mktemp("prometheus")
    target = urllib.parse.urlsplit(server.http_url).netloc
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                   "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "txxapi", "metrics_path": "/metrics",
            "scheme": "http",
            "authorization": {"type": "Bearer",
                              "credentials_file": token_file},
            "static_configs": [{"targets": [target]}]}]}
    # JSON is YAML.
    (base / "prometheus.yml").write_text(json.dumps(config))
    address = host_address(PROMETHEUS_ADDRESS)
    listen = "%s:%d" % (address, free_port_on(address))
    log = open(str(base / "prometheus.log"), "wb")
    proc = subprocess.Popen(
        [binary, "--config.file", str(base / "prometheus.yml"),
         "--storage.tsdb.path", str(base / "tsdb"),
         "--web.listen-address", listen, "--log.level", "warn"],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(base))
    url = "http://" + listen
    try:
        def ready():
            assert proc.poll() is None, (base / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_until(ready, timeout=20, what="Prometheus ready")
        yield url
    finally:
        proc.kill()
        proc.wait()
        log.close()


def query(prometheus, expr):
    """The instant vector of a PromQL expression: [(labels, value)]."""
    url = "%s/api/v1/query?%s" % (prometheus,
                                  urllib.parse.urlencode({"query": expr}))
    with urllib.request.urlopen(url, timeout=5) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", doc
    return [(s["metric"], float(s["value"][1]))
            for s in doc["data"]["result"]]


def newest(doc, suffix):
    """A column's known values, newest first."""
    return [v for _, v in known(column(doc, suffix))]


def test_prometheus_scrapes_with_the_token(server, x, sid, vm, prometheus):
    host_uuid = x.host.get_uuid(x.host.get_all()[0])
    vm_uuid = x.VM.get_uuid(vm)
    cpu = 'xapi_vm_cpu{vm="%s",device="0"}' % vm_uuid
    wait_until(lambda: query(prometheus, cpu), timeout=20,
               what="the VM's cpu0 in Prometheus")
    targets = json.loads(urllib.request.urlopen(
        prometheus + "/api/v1/targets", timeout=5).read())
    [target] = targets["data"]["activeTargets"]
    assert target["health"] == "up", target
    [(labels, total)] = query(
        prometheus, 'xapi_host_memory_total_kib{host="%s"}' % host_uuid)
    assert labels["job"] == "txxapi"
    [(labels, memory)] = query(prometheus,
                               'xapi_vm_memory{vm="%s"}' % vm_uuid)
    assert labels["host"] == host_uuid
    [(_, busy)] = query(prometheus, cpu)
    [(_, avg)] = query(prometheus,
                       'xapi_host_cpu_avg{host="%s"}' % host_uuid)

    doc = updates(server, sid)
    assert total == newest(doc, "host:%s:memory_total_kib" % host_uuid)[0]
    assert memory == newest(doc, "vm:%s:memory" % vm_uuid)[0] == float(
        x.VM.get_memory_dynamic_max(vm))
    # A rate a second or two older than the server's newest rows.
    rows = newest(doc, "vm:%s:cpu0" % vm_uuid)
    assert min(rows) - 1e-6 <= busy <= max(rows) + 1e-6, (busy, rows)
    assert 0 < busy <= 1
    rows = newest(doc, "host:%s:cpu_avg" % host_uuid)
    assert min(rows) - 1e-6 <= avg <= max(rows) + 1e-6, (avg, rows)


@pytest.mark.parametrize("content", ["", "\n", "two words\n"])
def test_a_token_file_must_hold_one_token(tmp_path, content):
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--metrics-token-file", str(path)])


def test_a_missing_token_file_is_refused(tmp_path):
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--metrics-token-file",
                                str(tmp_path / "none")])


def test_the_token_file_is_a_config_key(tmp_path):
    token = tmp_path / "token"
    token.write_text("abc\n")
    conf = tmp_path / "txxapi.conf"
    conf.write_text("[xapi]\nmetrics-token-file = %s\n" % token)
    options = Options()
    options.parseOptions(["--config", str(conf)])
    assert options.settings["metrics-token-file"] == str(token)
