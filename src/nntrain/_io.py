"""Atomic pickle writing and pickle reading shared by networks and the trainer."""

import os
import pickle
import tempfile


def atomic_pickle_dump(obj, path):
    """Pickle ``obj`` to ``path`` so that ``path`` is either the old file or the complete new one.

    Writes a temporary file in the same directory, flushes and fsyncs it, then
    ``os.replace``s it over ``path``. On any error the temporary file is removed and the
    previous content of ``path`` is left untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Make the rename durable where the OS allows opening a directory (POSIX)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def load_pickle(path):
    """Unpickle ``path``. Only load files you trust: unpickling can run arbitrary code."""
    with open(os.fspath(path), "rb") as f:
        return pickle.load(f)
