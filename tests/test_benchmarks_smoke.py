"""
The benchmark harness still runs: one item end to end at its smallest
(--smoke: a real server, the baseline servers and the load client
processes), its table printed and written as JSON.  The figures
themselves are not judged: a baseline starved by a busy machine may
answer nothing in its second.
"""

import glob
import json
import os
import subprocess
import sys

from tests.support.servers import REPO


def test_quick_api_item(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--only", "api",
         "--out", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "ratio" in out.stdout
    [path] = glob.glob(str(tmp_path / "*.json"))
    with open(path) as f:
        doc = json.load(f)
    rows = [r for r in doc["rows"] if r["item"] == "api"]
    throughput = [r for r in rows if r["unit"] == "req/s"]
    assert throughput and all(r["value"] > 0 for r in throughput
                              if r["figure"].endswith(", txxapi"))
    assert any(r["ratio"] for r in throughput)
