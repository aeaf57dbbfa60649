"""
Loaded (through PYTHONPATH) by the Python that runs Ansible's modules in
tests/test_ansible_xenserver.py: when XAPI_CALL_TRACE names a file, every
XML-RPC call the XenAPI SDK makes is appended to it as one JSON line
(method; the error if it failed; the task if it was an Async call), so the
test can state which calls the modules made and which failed.
"""

import json
import os
import xmlrpc.client

_TRACE = os.environ.get("XAPI_CALL_TRACE")

if _TRACE:
    _request = xmlrpc.client.ServerProxy._ServerProxy__request

    def _traced(self, methodname, params):
        result = _request(self, methodname, params)
        entry = {"method": methodname}
        if isinstance(result, dict) and result.get("Status") != "Success":
            entry["error"] = result.get("ErrorDescription")
        elif methodname.startswith("Async."):
            entry["task"] = result.get("Value")
        with open(_TRACE, "a") as f:
            f.write(json.dumps(entry) + "\n")
        return result

    xmlrpc.client.ServerProxy._ServerProxy__request = _traced
