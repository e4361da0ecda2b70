"""Training-step timing: ``python -m nntrain.stepbench``.

One step = ``network.gradient(x, t)`` (forward, backward) plus an Adam update, batch 100
of 1x28x28 images, for SimpleConvNet and DeepConvNet built from:

* ``nnlayers`` in float32 and float64,
* ``nnlayers.reference`` (the pure-NumPy layers) in float64,
* PyTorch CPU in float32 (when installed; the same architecture, ``torch.optim.Adam``),
  timed in a separate process so the thread pools cannot disturb each other.

The NumPy contenders are interleaved step by step in one process; every figure is a
median over ``--steps`` steps after warm-up. Ratios printed: float64 speedup over the
reference (reference time / nnlayers time) and float32 nnlayers time / PyTorch time.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from .networks import DeepConvNet, SimpleConvNet
from .optimizers import Adam

MODELS = {"simple": SimpleConvNet, "deep": DeepConvNet}
BATCH = 100


def _batch(rng, dtype):
    x = rng.random((BATCH, 1, 28, 28)).astype(dtype)
    t = rng.integers(0, 10, BATCH)
    return x, t


def numpy_step_times(model, steps, warmup=3, seed=0):
    """Median seconds per step for each NumPy contender, interleaved."""
    import nnlayers
    import nnlayers.reference as reference

    contenders = {
        "reference float64": (reference, np.float64),
        "nnlayers float64": (nnlayers, np.float64),
        "nnlayers float32": (nnlayers, np.float32),
    }
    rng = np.random.default_rng(seed)
    state = {}
    for name, (layers, dtype) in contenders.items():
        net = MODELS[model](layers=layers, dtype=dtype, rng=np.random.default_rng(seed))
        state[name] = (net, Adam(), dtype)
    times = {name: [] for name in contenders}
    for step in range(warmup + steps):
        x, t = _batch(rng, np.float64)
        for name, (net, opt, dtype) in state.items():
            np.random.seed(step)  # identical dropout masks
            start = time.perf_counter()
            grads = net.gradient(x.astype(dtype), t)
            opt.update(net.params, grads)
            elapsed = time.perf_counter() - start
            if step >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(v) for name, v in times.items()}


def _torch_model(model):
    import torch.nn as nn

    if model == "simple":
        return nn.Sequential(
            nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
            nn.Linear(30 * 12 * 12, 100), nn.ReLU(), nn.Linear(100, 10))
    layers, channels = [], 1
    for i, (filters, pad) in enumerate([(16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)]):
        layers += [nn.Conv2d(channels, filters, 3, padding=pad), nn.ReLU()]
        channels = filters
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2, 2))
    layers += [nn.Flatten(), nn.Linear(64 * 4 * 4, 50), nn.ReLU(), nn.Dropout(0.5),
               nn.Linear(50, 10), nn.Dropout(0.5)]
    return nn.Sequential(*layers)


def torch_step_time(model, steps, warmup=3, seed=0, threads=None):
    """Median seconds per float32 training step of the same network in PyTorch."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = _torch_model(model)
    opt = torch.optim.Adam(net.parameters(), lr=0.001)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    times = []
    for step in range(warmup + steps):
        x, t = _batch(rng, np.float32)
        xt, tt = torch.from_numpy(x), torch.from_numpy(t)
        start = time.perf_counter()
        opt.zero_grad()
        loss_fn(net(xt), tt).backward()
        opt.step()
        elapsed = time.perf_counter() - start
        if step >= warmup:
            times.append(elapsed)
    return statistics.median(times)


def _torch_in_subprocess(model, steps, threads):
    code = (f"import json; from nntrain.stepbench import torch_step_time; "
            f"print(json.dumps(torch_step_time({model!r}, {steps}, threads={threads!r})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def _torch_available():
    try:
        import importlib.util
        return importlib.util.find_spec("torch") is not None
    except ValueError:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nntrain.stepbench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="simple,deep", help="comma list of simple, deep")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per contender")
    parser.add_argument("--threads", type=int, help="threads for nnlayers and PyTorch")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    if args.threads:
        import nnlayers
        nnlayers.set_num_threads(args.threads)
    results = {}
    for model in args.models.split(","):
        medians = numpy_step_times(model, args.steps)
        if _torch_available():
            medians["pytorch float32"] = _torch_in_subprocess(model, args.steps, args.threads)
        results[model] = medians
        ref, f64, f32 = (medians["reference float64"], medians["nnlayers float64"],
                         medians["nnlayers float32"])
        torch_t = medians.get("pytorch float32")
        print(f"{MODELS[model].__name__}: one training step (gradient + Adam), batch {BATCH}, 1x28x28")
        for name, value in medians.items():
            print(f"  {name:<18} {'-' if value is None else f'{value * 1e3:8.2f} ms'}")
        print(f"  float64 speedup over the reference: {ref / f64:.2f}x")
        if torch_t:
            print(f"  float32 nnlayers / PyTorch time:    {f32 / torch_t:.2f}")
        print(flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
