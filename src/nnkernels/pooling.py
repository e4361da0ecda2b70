"""Max pooling: forward with the argmax of each window, backward scattering to it.

STUB — to be implemented (see the docstrings for the contract).
"""

import numpy as np

__all__ = ["maxpool_forward", "maxpool_backward"]


def maxpool_forward(x, pool_h, pool_w, stride=1, pad=0):
    """Max over each ``pool_h x pool_w`` window of ``x`` ``(N, C, H, W)``.

    Returns ``(out, argmax)``: ``out`` ``(N, C, out_h, out_w)`` of ``x``'s float dtype,
    ``argmax`` ``(N, C, out_h, out_w)`` int64, the winner's index ``ky*pool_w + kx`` inside
    its window. ``out_h = (H + 2*pad - pool_h)//stride + 1``. Padded cells never win;
    ``pad`` must be smaller than the window. Ties: the first maximum in row-major window
    order wins; a NaN counts as the maximum (as ``np.argmax``/``np.max`` do).
    """
    raise NotImplementedError


def maxpool_backward(dout, argmax, input_shape, pool_h, pool_w, stride=1, pad=0):
    """Scatter ``dout`` ``(N, C, out_h, out_w)`` to the argmax cells; return ``(N, C, H, W)``.

    Overlapping windows (``stride < pool``) add up. Result dtype: ``dout``'s float dtype.
    """
    raise NotImplementedError
