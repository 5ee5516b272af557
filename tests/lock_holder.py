"""Subprocess helper for tests/test_promote.py: take the promotion lock, say so, and hold it until killed.

    python tests/lock_holder.py TRACKING_URI MODEL_NAME

Prints "locked <pid>" once the lock is held, then sleeps. SIGTERM (or Ctrl-C) while holding must release
the lock (exit 130); SIGKILL leaves it behind for the next promote to break.
"""

from __future__ import annotations

import os
import sys
import time

from ganops.tracking.promotion import registry_lock

if __name__ == "__main__":
    uri, name = sys.argv[1:3]
    try:
        with registry_lock(uri, name, wait_s=60):
            print(f"locked {os.getpid()}", flush=True)
            time.sleep(600)
    except KeyboardInterrupt:
        sys.exit(130)
