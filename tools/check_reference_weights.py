"""Weights trained with the reference layers give the same predictions on nnlayers.

First train with the pure-NumPy layers::

    python -m nntrain --layers reference --dtype float64 --epochs 2 --out /tmp/refrun

then ``python tools/check_reference_weights.py /tmp/refrun/params.pkl``: loads the file
into SimpleConvNet built on each implementation and compares their scores on the digits
test set (28x28 frames).
"""

import sys

import numpy as np

from nntrain.data import load_digits
from nntrain.networks import SimpleConvNet


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/refrun/params.pkl"
    _, (x, t) = load_digits(flatten=False, image_size=28)
    x = x.astype(np.float64)
    scores = {}
    for layers in ("reference", "nnlayers"):
        net = SimpleConvNet(layers=layers, dtype=np.float64)
        net.load_params(path)
        scores[layers] = net.predict(x)
    ref, fast = scores["reference"], scores["nnlayers"]
    print(f"max |score difference| {np.abs(ref - fast).max():.3g} over {len(x)} test images")
    print(f"same predicted classes: {np.array_equal(ref.argmax(1), fast.argmax(1))}; "
          f"accuracy {np.mean(fast.argmax(1) == t):.4f}")


if __name__ == "__main__":
    main()
