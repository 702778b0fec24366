"""Entry point that runs the nx-27017 MongoDB-protocol server the way we need it.

Run as `python -m orchestrator.embedded.nxserver DATA_DIR [nx-27017 options]`. Two things
happen before the server's own main():
- an exclusive lock on DATA_DIR/.lock, held for the process's life, so that
  two servers never share one set of database files (claims would be granted
  twice; see docs/design.md §13);
- neosqlite's SQL fast path is switched off, because in that mode `$set` into
  an existing document stores datetimes as strings and bools as 0/1.
"""

from __future__ import annotations

import fcntl
import os
import sys

LOCKED_EXIT = 3


def main() -> None:
    data_dir = sys.argv[1]
    os.makedirs(data_dir, exist_ok=True)
    lock = open(os.path.join(data_dir, ".lock"), "a+")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another nx-27017 server already serves {data_dir}", file=sys.stderr)
        sys.exit(LOCKED_EXIT)
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")  # so that a refused starter can name the holder
    lock.flush()

    from neosqlite.collection.query_helper.utils import set_force_fallback

    set_force_fallback(True)
    from nx_27017.nx_27017 import main as nx_main

    sys.argv = ["nx-27017", "--data-dir", data_dir, *sys.argv[2:]]
    nx_main()


if __name__ == "__main__":
    main()
