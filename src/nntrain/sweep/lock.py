"""One command at a time per output directory.

``nntrain sweep`` and ``nntrain repeat`` hold a lock file in ``--out`` while they run (an
operating-system lock, released when the process ends however it ends) and record who
holds it beside it, so that a second command on the same ``--out`` is refused at once with
one line naming the first.
"""

import contextlib
import datetime
import json
import os
import socket
import sys

from ..command import fail
from . import require

#: the lock file in --out, and the record of its holder
LOCK_NAME = ".nntrain.lock"
HOLDER_NAME = ".nntrain.lock.json"


def describe_holder(out_dir):
    """The command holding the lock of ``out_dir``, in words, from its record."""
    try:
        with open(os.path.join(out_dir, HOLDER_NAME)) as f:
            holder = json.load(f)
        return (
            f"nntrain {holder['command']} (pid {holder['pid']} on {holder['host']}, "
            f"started {holder['started']})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "another nntrain command"


@contextlib.contextmanager
def output_lock(out_dir, command):
    """Hold the lock of the existing directory ``out_dir`` for the block, as ``command``
    (``"sweep"``/``"repeat"``); when another process holds it, stop with one line naming
    that process and exit status 2."""
    filelock = require("filelock")
    lock = filelock.FileLock(os.path.join(out_dir, LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        fail(
            f"--out {out_dir} is in use by {describe_holder(out_dir)}: one command per "
            "--out at a time; wait for it to end or choose another --out"
        )
    holder_path = os.path.join(out_dir, HOLDER_NAME)
    try:
        holder = {
            "command": command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(sep=" ", timespec="seconds"),
            "argv": sys.argv,
        }
        with contextlib.suppress(OSError):  # the record only names the holder
            with open(holder_path, "w") as f:
                json.dump(holder, f)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(holder_path)
        lock.release()
