"""Write the NumPy 1.x params fixtures (run with NumPy 1.x, from this directory).

``numpy1_params_p2.pkl`` (float64, protocol 2) and ``numpy1_params_p4.pkl`` (float32,
protocol 4) hold the parameters of ``MultiLayerNet(4, [3], 2)`` as the book's
``save_params`` pickles them: a dict of arrays, values ``numpy1_params_values()``.
"""

import pickle

import numpy as np


def numpy1_params_values(dtype):
    """``{"W1": (4, 3), "b1": (3,), "W2": (3, 2), "b2": (2,)}`` of ``dtype``."""
    shapes = {"W1": (4, 3), "b1": (3,), "W2": (3, 2), "b2": (2,)}
    return {
        key: (np.arange(np.prod(shape)).reshape(shape) / 8 - 0.5 - i).astype(dtype)
        for i, (key, shape) in enumerate(shapes.items())
    }


if __name__ == "__main__":
    assert np.__version__.startswith("1."), np.__version__
    for protocol, dtype in ((2, np.float64), (4, np.float32)):
        with open(f"numpy1_params_p{protocol}.pkl", "wb") as f:
            pickle.dump(numpy1_params_values(dtype), f, protocol=protocol)
