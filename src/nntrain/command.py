"""What ``nntrain`` and ``nntrain sweep``/``repeat`` share around their options.

A bad option is refused with one line on stderr and exit status 2 (:func:`fail`, and
:class:`CommandParser` for argparse's own errors); numbers and output paths are checked
before any work starts; a file that cannot be written raises :class:`OutputError`, which
names it; :func:`compile_notice` says what a long first warm-up is doing.
"""

import argparse
import contextlib
import math
import os
import sys
import threading
import time

from ._untrusted import printable

__all__ = [
    "CommandParser",
    "OutputError",
    "check_learning_rate",
    "check_output_directory",
    "check_output_file",
    "check_positive",
    "compile_notice",
    "create_directory",
    "fail",
    "writing",
]

#: what :func:`compile_notice` prints after its delay
COMPILE_NOTICE = (
    "nntrain: compiling the JIT kernels (first run only: about 5-10 s on 2 cores; "
    "later runs load them from the cache) ..."
)


def fail(message, status=2):
    """Stop the command: ``nntrain: error: MESSAGE`` as one line on stderr, then
    ``SystemExit(status)`` (2: a bad option or a refused run; 1: a failure while running)."""
    line = printable(" ".join(str(message).split()))  # a file name cannot forge lines
    print("nntrain: error: " + line, file=sys.stderr, flush=True)
    raise SystemExit(status)


class CommandParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (:func:`fail`), not the usage."""

    def error(self, message):
        fail(f"{message} (see {self.prog} --help)")


def option_name(dest):
    """``--batch-size`` for the argparse destination ``batch_size``."""
    return "--" + dest.replace("_", "-")


def check_positive(args, names):
    """Refuse an option of ``names`` (argparse destinations) that is given and below 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            fail(f"{option_name(name)} must be positive, got {value}")


def check_learning_rate(value, option="--lr"):
    """Refuse a learning rate that is given and not a finite positive number."""
    if value is not None and not (math.isfinite(value) and value > 0):
        fail(f"{option} must be a positive number, got {value:g}")


def directory_problem(path):
    """Why files could not be written into the directory ``path`` (created if it does not
    exist), as words to follow its name; ``None`` when nothing stands in the way."""
    if os.path.lexists(path):
        if not os.path.isdir(path):
            return "exists and is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return "is a directory that is not writable"
        return None
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable"
    return None


def check_output_directory(path, option, names=()):
    """Refuse an output directory ``path`` (given as ``option``) that cannot be created or
    written, or in which one of the file ``names`` the command writes is a directory."""
    problem = directory_problem(path)
    if problem:
        fail(f"{option} {path}: {problem}")
    for name in names:
        if os.path.isdir(os.path.join(path, name)):
            fail(f"{option} {path}: {name} in it is a directory")


def check_output_file(path, option):
    """Refuse an output file ``path`` (given as ``option``) that is a directory or whose
    directory cannot be created or written."""
    if os.path.isdir(path):
        fail(f"{option} {path}: is a directory")
    directory = os.path.dirname(path) or "."
    problem = directory_problem(directory)
    if problem:
        fail(f"{option} {path}: its directory {directory} {problem}")


def create_directory(path, option):
    """Create the directory ``path`` (given as ``option``) and its parents, or refuse."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        fail(f"{option} {path}: cannot create it ({exc.strerror or exc})")


class OutputError(Exception):
    """A file a command writes could not be written.

    Attributes
    ----------
    path : str
        The file.
    reason : str
        The system's words (``No space left on device``).
    """

    def __init__(self, path, reason):
        super().__init__(path, reason)
        self.path, self.reason = os.fspath(path), reason

    def __str__(self):
        return f"cannot write {self.path} ({self.reason})"


@contextlib.contextmanager
def writing(path):
    """Turn an ``OSError`` in the block into an :class:`OutputError` naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise OutputError(path, exc.strerror or str(exc)) from exc


@contextlib.contextmanager
def compile_notice(enabled=True, after=1.0, file=None):
    """Print :data:`COMPILE_NOTICE` on ``file`` (default stderr) if the block runs longer
    than ``after`` seconds, and then, on the same line, how long it took.

    A warm JIT cache loads a network's kernels in well under a second, so only a first run
    (or one after the kernels changed) prints anything.
    """
    if not enabled:
        yield
        return
    out = sys.stderr if file is None else file
    start = time.perf_counter()
    lock = threading.Lock()
    state = {"done": False, "shown": False}

    def show():
        with lock:
            if not state["done"]:
                print(COMPILE_NOTICE, end="", file=out, flush=True)
                state["shown"] = True

    def finish(words):
        timer.cancel()
        with lock:
            state["done"] = True
            if state["shown"]:
                print(words, file=out, flush=True)

    timer = threading.Timer(after, show)
    timer.daemon = True
    timer.start()
    try:
        yield
    except BaseException:
        finish(" stopped")
        raise
    finish(f" done in {time.perf_counter() - start:.1f} s")
