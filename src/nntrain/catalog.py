"""The networks and datasets the commands name: ``--model`` and ``--dataset``.

``nntrain`` (``cli.py``) and ``nntrain sweep``/``repeat`` (``sweep/``) take the same names
and build the same networks and data from them; a sweep's workers build them here too.
"""

from . import data as datasets
from .networks import DeepConvNet, MultiLayerNet, SimpleConvNet

__all__ = ["MODELS", "DATASETS", "load_dataset", "build_network"]

#: ``--model``: SimpleConvNet, DeepConvNet, a multi-layer net
MODELS = ("simple", "deep", "mlp")
#: ``--dataset``: scikit-learn's digits, Fashion-MNIST, MNIST-format IDX files in a directory
DATASETS = ("digits", "fashion-mnist", "mnist-dir")


def load_dataset(name, data_dir, flatten, digits_size=8, train_count=None):
    """The dataset ``name`` (one of :data:`DATASETS`), normalised, with integer labels.

    Parameters
    ----------
    name : str
    data_dir : str or None
        Directory of the four IDX files (``fashion-mnist``, ``mnist-dir``).
    flatten : bool
        Images as ``(N, H*W)`` rows instead of ``(N, 1, H, W)``.
    digits_size : {8, 28}
        Side of the digits images (28: centred in MNIST-like frames).
    train_count : int or None
        Keep only the first ``train_count`` training images (the IDX files are read no
        further).

    Returns
    -------
    ((x_train, t_train), (x_test, t_test))
        float32 images in [0, 1] and integer labels ``(N,)``.

    Raises
    ------
    ValueError
        ``data_dir`` with ``digits``, or files that are not MNIST-format.
    FileNotFoundError
        The dataset's files are missing.
    """
    options = dict(normalize=True, flatten=flatten, one_hot_label=False)
    if name == "digits":
        if data_dir:
            raise ValueError("--data-dir does not apply to --dataset digits")
        (x_train, t_train), test = datasets.load_digits(**options, image_size=digits_size)
        return (x_train[:train_count], t_train[:train_count]), test
    options.update(data_dir=data_dir, train_count=train_count)
    if name == "fashion-mnist":
        return datasets.load_fashion_mnist(**options)
    return datasets.load_mnist(**options)


def build_network(model, input_shape, *, layers, dtype, rng):
    """The network ``model`` (one of :data:`MODELS`) for images of ``input_shape = (C, H, W)``.

    ``simple`` uses a 3x3 "same" convolution for images of at most 16x16 pixels (so that
    its 2x2 pooling still sees a meaningful map), the book's 5x5 otherwise; ``mlp`` has two
    hidden layers of 100. ``layers``, ``dtype`` and ``rng`` go to the network's constructor.
    """
    C, H, W = input_shape
    if model == "simple":
        if H * W <= 16 * 16:
            conv = {"filter_num": 30, "filter_size": 3, "pad": 1, "stride": 1}
        else:
            conv = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}
        return SimpleConvNet(
            input_dim=input_shape,
            conv_param=conv,
            hidden_size=100,
            output_size=10,
            weight_init_std=0.01,
            layers=layers,
            dtype=dtype,
            rng=rng,
        )
    if model == "deep":
        return DeepConvNet(input_dim=input_shape, layers=layers, dtype=dtype, rng=rng)
    return MultiLayerNet(C * H * W, [100, 100], 10, layers=layers, dtype=dtype, rng=rng)
