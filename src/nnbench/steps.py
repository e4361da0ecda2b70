"""Training-step timing: ``python -m nnbench.steps`` (also ``python -m nntrain.stepbench``).

One step = ``network.gradient(x, t)`` (forward, backward) plus an Adam update, batch 100
of 1x28x28 images, for SimpleConvNet and DeepConvNet (:data:`nnbench.cases.NETWORKS`)
built from:

* ``nnlayers`` in float32 and float64,
* ``nnlayers.reference`` (the pure-NumPy layers) in float64,
* PyTorch CPU in float32 (when installed; the same architecture, ``torch.optim.Adam``),
  timed in a separate process so the thread pools cannot disturb each other.

The NumPy contenders are interleaved step by step in one process (:mod:`nnbench.timing`);
every figure is a median over ``--steps`` steps after warm-up, each step on a new batch
(drawn untimed) and, for all contenders alike, the same dropout masks. Ratios printed:
float64 speedup over the reference (reference time / nnlayers time) and float32 nnlayers
time / PyTorch time.
"""

import argparse
import json
import subprocess
import sys

import numpy as np

from .cases import BATCH, IMAGE, NETWORKS, build_network, network_batch, torch_network
from .timing import time_interleaved

__all__ = ["BATCH", "MODELS", "main", "numpy_step_times", "torch_step_time"]

MODELS = NETWORKS


def numpy_step_times(model, steps, warmup=3, seed=0):
    """Median seconds per step for each NumPy contender, interleaved."""
    from nntrain.optimizers import Adam

    contenders = {
        "reference float64": ("reference", np.float64),
        "nnlayers float64": ("nnlayers", np.float64),
        "nnlayers float32": ("nnlayers", np.float32),
    }
    rng = np.random.default_rng(seed)
    state, batch, calls = {}, {}, {"n": 0}
    for name, (layers, dtype) in contenders.items():
        state[name] = (build_network(model, layers, dtype, seed), Adam(), dtype)

    def before(name):
        # a new batch (drawn in float64, then cast) each round, the same for every contender
        if name == next(iter(contenders)):
            calls["n"] += 1
            batch["x"], batch["t"] = network_batch(rng, np.float64)
        np.random.seed(calls["n"])  # identical dropout masks
        net, _, dtype = state[name]
        batch["input"] = batch["x"].astype(dtype)

    def step(name):
        net, opt, _ = state[name]

        def run():
            opt.update(net.params, net.gradient(batch["input"], batch["t"]))

        return run

    timed = time_interleaved(
        {name: step(name) for name in contenders}, steps, warmup, before=before
    )
    return {name: med for name, (med, _) in timed.items()}


def torch_step_time(model, steps, warmup=3, seed=0, threads=None):
    """Median seconds per float32 training step of the same network in PyTorch."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = torch_network(model)
    opt = torch.optim.Adam(net.parameters(), lr=0.001)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    batch = {}

    def before(_):
        x, t = network_batch(rng, np.float32)
        batch["x"], batch["t"] = torch.from_numpy(x), torch.from_numpy(t)

    def run():
        opt.zero_grad()
        loss_fn(net(batch["x"]), batch["t"]).backward()
        opt.step()

    return time_interleaved({"torch": run}, steps, warmup, before=before)["torch"][0]


def _torch_in_subprocess(model, steps, threads):
    code = (
        f"import json; from nnbench.steps import torch_step_time; "
        f"print(json.dumps(torch_step_time({model!r}, {steps}, threads={threads!r})))"
    )
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
    parser = argparse.ArgumentParser(
        prog="python -m nntrain.stepbench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--models", default="simple,deep", help="comma list of simple, deep")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per contender (default 20, 1 with --quick)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed steps per contender first (default 3, 1 with --quick)",
    )
    parser.add_argument("--threads", type=int, help="threads for nnlayers and PyTorch")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 warm-up and 1 timed step: a smoke test, not a measurement",
    )
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    steps = args.steps if args.steps is not None else (1 if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(NETWORKS))
    if unknown or steps < 1 or warmup < 0:
        parser.error(f"--models from {', '.join(NETWORKS)}; --steps >= 1; --warmup >= 0")
    if args.threads:
        import nnkernels

        nnkernels.set_num_threads(args.threads)
    results = {}
    for model in models:
        medians = numpy_step_times(model, steps, warmup)
        if not args.no_torch and _torch_available():
            medians["pytorch float32"] = _torch_in_subprocess(model, steps, args.threads)
        results[model] = medians
        ref, f64, f32 = (
            medians["reference float64"],
            medians["nnlayers float64"],
            medians["nnlayers float32"],
        )
        torch_t = medians.get("pytorch float32")
        print(
            f"{NETWORKS[model]}: one training step (gradient + Adam), batch {BATCH}, "
            f"{'x'.join(map(str, IMAGE))}"
        )
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
