"""
A process that never touches Xen: threads allocate, fill and check large
buffers (beyond pymalloc, so through the C allocator) while the main
thread forks and execs.  Run beside domain builds by xl_stress.sh; any
crash or bad count here is memory corrupted from outside the process.

    python3 tests/realxen/churn.py SECONDS
"""

import os
import random
import subprocess
import sys
import threading
import time


def churn(seed, deadline, bad, rounds):
    rnd = random.Random(seed)
    while time.time() < deadline:
        items = []
        for _ in range(200):
            n = rnd.randrange(600, 200000)
            byte = bytes([rnd.randrange(256)])
            items.append((byte * n, n, byte))
        for data, n, byte in items:
            if len(data) != n or data.count(byte) != n:
                bad.append((seed, n))
        rounds.append(1)


def main(seconds):
    deadline = time.time() + seconds
    bad, rounds = [], []
    threads = [threading.Thread(target=churn, args=(i, deadline, bad, rounds))
               for i in range(4)]
    for t in threads:
        t.start()
    forks = 0
    while time.time() < deadline:
        subprocess.run(["true"])
        forks += 1
    for t in threads:
        t.join()
    print("churn: pid %d, %d rounds, %d forks, %d bad"
          % (os.getpid(), len(rounds), forks, len(bad)), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 60))
