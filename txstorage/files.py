"""
Small file helpers the storage code shares: JSON written atomically and
durably, JSON read tolerantly, and removal and usage of files that may
vanish under us.
"""

import json
import os
import uuid as uuidlib


def write_json(path, data):
    tmp = os.path.join(os.path.dirname(path),
                       ".%s.%s.tmp" % (os.path.basename(path),
                                       uuidlib.uuid4().hex[:8]))
    with open(tmp, "w") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except ValueError:
        # A torn or foreign file: treat as absent rather than fail a scan.
        return default


def unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def disk_usage(path):
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0
