"""Training scripts for the "Deep Learning from Scratch" networks on top of ``nnlayers``.

Importing this package needs only NumPy; the layer module is imported when a network is
built (``layers=``, default ``nnlayers``), and tqdm / matplotlib / scikit-learn only by
the features that use them (``pip install 'nnkernels[train]'``).
"""

from ._io import LoadError
from .data import load_digits, load_fashion_mnist, load_idx_dir, load_mnist, read_idx
from .networks import DeepConvNet, MultiLayerNet, MultiLayerNetExtend, SimpleConvNet
from .optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop, make_optimizer
from .trainer import Trainer

__all__ = [
    "SimpleConvNet",
    "DeepConvNet",
    "MultiLayerNet",
    "MultiLayerNetExtend",
    "SGD",
    "Momentum",
    "Nesterov",
    "AdaGrad",
    "RMSprop",
    "Adam",
    "make_optimizer",
    "Trainer",
    "LoadError",
    "load_mnist",
    "load_fashion_mnist",
    "load_digits",
    "load_idx_dir",
    "read_idx",
]
