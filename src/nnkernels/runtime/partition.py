"""How a call's work is shared: thread counts, parts over threads, and chunks.

Every rule that decides how many threads a call uses and how large a piece of work each
takes lives here: the thread count (the ``threads`` setting, else Numba's count in the
calling thread), the shares of a batch's samples or of a product's rows over threads
(:func:`sample_parts`, :func:`row_parts`), the items of a kernel over samples and blocks
of their channels (:func:`channel_blocks`), the chunks of samples a convolution holds columns
for under the ``workspace_limit`` setting (:func:`conv_chunk_size`, :func:`unkept_chunk`),
and the dealing of chunks to threads as they finish (:func:`run_in_chunks`).
"""

import threading

import numba

from .. import config
from .helpers import run_parts
from .jit import one_share

__all__ = [
    "threading_layer",
    "get_num_threads",
    "set_num_threads",
    "sample_parts",
    "row_parts",
    "channel_blocks",
    "conv_chunk_size",
    "unkept_chunk",
    "run_in_chunks",
    "run_shares",
    "BACKWARD_CHUNK_BYTES",
    "CHUNKS_PER_PART",
]

#: bytes of input-gradient columns a columns-route backward handles at once per thread
BACKWARD_CHUNK_BYTES = 8 << 20
#: chunks of samples per part that the parts take in turn, so that a thread which starts late
#: (a helper waking up) takes fewer samples instead of holding up the call
CHUNKS_PER_PART = 8
#: items a kernel over (sample, block of channels) is cut into where the shape allows
CHANNEL_BLOCK_ITEMS = 64


def threading_layer():
    """The Numba threading layer loaded in this process (by other code: the library never
    starts one), or None. Loads nothing."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def get_num_threads():
    """The number of threads a call of the library made from this thread uses: the
    ``threads`` setting; else, where other code started Numba's threading layer, Numba's
    count in this thread (``numba.set_num_threads``); else ``NUMBA_NUM_THREADS`` (the
    cores available unless the environment says otherwise). Starts nothing."""
    threads = config.get("threads")
    if threads is not None:
        return min(threads, numba.config.NUMBA_NUM_THREADS)
    if threading_layer() is not None:
        return numba.get_num_threads()
    return numba.config.NUMBA_NUM_THREADS


def set_num_threads(n):
    """Use ``n`` threads in the library's kernels and products; returns the previous count.

    The ``threads`` setting for the whole process (``set_config(threads=n)``): Numba's own
    thread count, which the user's Numba code sees, and NumPy's BLAS are left as they are.
    ``n`` must be between 1 and ``numba.config.NUMBA_NUM_THREADS`` (the core count unless
    ``NUMBA_NUM_THREADS`` says otherwise).
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__} {n!r}")
    maximum = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= maximum:
        raise ValueError(f"n must be between 1 and {maximum} (NUMBA_NUM_THREADS), got {n}")
    previous = get_num_threads()
    config.set_config(threads=n)
    return previous


def sample_parts(start, stop, macs):
    """Contiguous ``(lo, hi)`` shares of ``range(start, stop)``, one per thread.

    A single part when there is one thread, one sample, or fewer than the
    ``split_min_macs`` setting's multiply-adds of work.

    Parameters
    ----------
    start, stop : int
        The samples to share.
    macs : int
        Multiply-adds of the whole work, for deciding whether sharing pays.
    """
    return row_parts(start, stop, macs)


def row_parts(start, stop, macs, threads=None):
    """Contiguous ``(lo, hi)`` shares of the rows ``range(start, stop)`` over ``threads``
    (default :func:`get_num_threads`); one share below ``split_min_macs`` multiply-adds."""
    n_rows = stop - start
    if macs < config.get("split_min_macs"):
        return [(start, stop)]
    return _even_shares(start, stop, min(threads or get_num_threads(), n_rows))


def _even_shares(start, stop, parts):
    """``parts`` contiguous ``(lo, hi)`` of ``range(start, stop)`` differing by at most one
    item (one share when ``parts`` is below 2)."""
    if parts < 2:
        return [(start, stop)]
    count = stop - start
    return [(start + count * i // parts, start + count * (i + 1) // parts) for i in range(parts)]


def channel_blocks(n_samples, channels):
    """``(block, items)`` for a kernel whose items are a sample and a block of its channels:
    ``block`` channels per item (the last of a sample may have fewer), the largest that
    still gives about :data:`CHANNEL_BLOCK_ITEMS` items so that any thread count has a
    share, and the number of items. Decided by the shape alone, so results never depend on
    the thread count."""
    block = max(1, min(channels, n_samples * channels // CHANNEL_BLOCK_ITEMS))
    return block, n_samples * -(-channels // block)


def conv_chunk_size(n_samples, bytes_per_sample):
    """How many samples' columns a convolution holds at once under the workspace limit.

    Parameters
    ----------
    n_samples : int
        Samples in the batch.
    bytes_per_sample : int
        Bytes of one sample's column matrix.
    """
    n_samples = max(int(n_samples), 1)
    if bytes_per_sample <= 0:
        return n_samples
    limit = config.get("workspace_limit")
    if limit is None:
        if n_samples * bytes_per_sample <= config.AUTO_CHUNK_ABOVE:
            return n_samples
        limit = config.AUTO_WORKSPACE
    return max(1, min(n_samples, limit // bytes_per_sample))


def unkept_chunk(n_samples, per_sample, threads):
    """Samples per chunk when a batch's columns are not kept: each thread then holds a
    column chunk and an input-gradient chunk, together within the workspace limit."""
    if per_sample <= 0:  # no columns (no input channels): any chunk holds nothing
        return max(int(n_samples), 1)
    return max(
        1,
        min(
            conv_chunk_size(n_samples, per_sample) // (2 * threads),
            BACKWARD_CHUNK_BYTES // per_sample,
        ),
    )


def kept_chunk(n_samples, per_sample, threads):
    """Samples per chunk of a backward whose columns were kept: each thread holds an
    input-gradient chunk within its share of the workspace limit."""
    if per_sample <= 0:
        return max(int(n_samples), 1)
    return max(
        1,
        min(conv_chunk_size(n_samples, per_sample) // threads, BACKWARD_CHUNK_BYTES // per_sample),
    )


def run_in_chunks(n_samples, n_parts, run_chunk):
    """Call ``run_chunk(part, lo, hi)`` over ``range(n_samples)`` in chunks, on ``n_parts``
    threads (:func:`~.helpers.run_parts`), each thread taking the next chunk when done.

    Every sample's results are computed by one call whatever thread takes it, so they do
    not depend on the scheduling; ``part`` names the thread's scratch.
    """
    if n_parts == 1:
        run_chunk(0, 0, n_samples)
        return
    size = max(1, n_samples // (n_parts * CHUNKS_PER_PART))
    starts = iter(range(0, n_samples, size))
    lock = threading.Lock()

    def part_work(part, lo, hi, stop):
        while not stop.is_set():
            with lock:
                start = next(starts, None)
            if start is None:
                return
            run_chunk(part, start, min(n_samples, start + size))

    run_parts([(0, n_samples)] * n_parts, part_work)


def run_shares(kernel, count, work, *args):
    """Call ``kernel(*args, lo, hi)`` over ``range(count)``: in one share in the calling
    thread for small ``work`` (elements; :func:`~.jit.one_share`), else in contiguous shares,
    one per thread (:func:`~.helpers.run_parts`). For kernels whose items are independent
    (each writes its own outputs), so results do not depend on the shares."""
    parts = 1 if one_share(work) else min(get_num_threads(), count)
    if parts < 2:
        kernel(*args, 0, count)
        return
    run_parts(_even_shares(0, count, parts), lambda part, lo, hi, stop: kernel(*args, lo, hi))
