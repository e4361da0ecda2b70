"""Fixtures of the nntrain tests."""

import pytest

import nnkernels


@pytest.fixture(autouse=True)
def keep_thread_counts():
    """A sweep trial run in the test process (``run_trial``, or ``--workers 0``) sets the
    process's thread counts, as a command may (it owns its process): put them back for the
    tests that follow."""
    before = nnkernels.get_num_threads()
    yield
    if nnkernels.get_num_threads() != before:
        nnkernels.set_num_threads(before)
