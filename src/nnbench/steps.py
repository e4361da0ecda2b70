"""Training-step timing: ``python -m nnbench.steps`` (also ``python -m nntrain.stepbench``).

One step = ``network.gradient(x, t)`` (forward, backward) plus an Adam update, batch 100
of 1x28x28 images, for SimpleConvNet and DeepConvNet (:data:`nnbench.cases.NETWORKS`)
built from:

* ``nnlayers`` in float32 and float64, with the library's defaults,
* ``nnlayers.reference`` (the pure-NumPy layers) in float64,
* PyTorch CPU in float32 (when installed; the same architecture, ``torch.optim.Adam``).

Every contender runs in a fresh process of its own (nothing set, nothing in the
environment but what ``--env`` adds), so no contender's threads or caches touch another's:
a round starts one process per contender, one after the other, and ``--rounds`` rounds
alternate them. Each process times ``--steps`` steps after warm-up, each on a new batch
(drawn untimed, the same batches and dropout masks for every contender), and reports the
median. Printed: each contender's median over the rounds, and the median over the rounds of
each round's ratios (float64 speedup over the reference, float32 time over PyTorch's).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np

from .cases import BATCH, IMAGE, NETWORKS, build_network, network_batch, torch_network
from .timing import time_interleaved

__all__ = ["BATCH", "CONTENDERS", "MODELS", "main", "step_time", "torch_step_time"]

MODELS = NETWORKS
#: contender name -> (layers, dtype)
CONTENDERS = {
    "reference float64": ("reference", "float64"),
    "nnlayers float64": ("nnlayers", "float64"),
    "nnlayers float32": ("nnlayers", "float32"),
    "pytorch float32": ("torch", "float32"),
}


def step_time(model, layers, dtype, steps, warmup=3, seed=0):
    """Median seconds per training step of ``model`` built from ``layers`` in ``dtype``."""
    from nntrain.optimizers import Adam

    dtype = np.dtype(dtype)
    net, opt = build_network(model, layers, dtype, seed), Adam()
    rng = np.random.default_rng(seed)
    batch, calls = {}, {"n": 0}

    def before(_):
        calls["n"] += 1
        x, batch["t"] = network_batch(rng, np.float64)  # drawn in float64 for every contender
        batch["x"] = x.astype(dtype)
        np.random.seed(calls["n"])  # the same dropout masks for every contender

    def run():
        opt.update(net.params, net.gradient(batch["x"], batch["t"]))

    return time_interleaved({"step": run}, steps, warmup, before=before)["step"][0]


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
        x, t = network_batch(rng, np.float64)
        batch["x"], batch["t"] = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(t)

    def run():
        opt.zero_grad()
        loss_fn(net(batch["x"]), batch["t"]).backward()
        opt.step()

    return time_interleaved({"torch": run}, steps, warmup, before=before)["torch"][0]


def _child(args):
    """In a fresh process: time one contender and print its median as JSON."""
    layers, dtype = CONTENDERS[args.contender]
    if args.threads and layers != "torch":
        import nnkernels

        nnkernels.set_num_threads(args.threads)
    if layers == "torch":
        seconds = torch_step_time(args.model, args.steps, args.warmup, threads=args.threads)
    else:
        seconds = step_time(args.model, layers, dtype, args.steps, args.warmup)
    print(json.dumps({"seconds": seconds}))
    return 0


def _run_child(model, contender, args, env):
    command = [
        sys.executable,
        "-m",
        "nnbench.steps",
        "--child",
        contender,
        "--models",
        model,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        print(f"  {contender}: failed ({tail[0]})", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])["seconds"]


def _torch_available():
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None
    except ValueError:
        return False


def _ratios(rounds, numerator, denominator):
    values = [
        r[numerator] / r[denominator] for r in rounds if r.get(numerator) and r.get(denominator)
    ]
    return statistics.median(values) if values else None


def _environment(pairs):
    env = dict(os.environ)
    for pair in pairs:
        name, _, value = pair.partition("=")
        env[name] = value
    return env


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m nntrain.stepbench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--models", default="simple,deep", help="comma list of simple, deep")
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per process (default 20, 1 quick)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (default 3, 1 quick)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds of fresh processes (default 3, 1 quick)"
    )
    parser.add_argument("--threads", type=int, help="threads for nnlayers and PyTorch")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="add a variable to every contender's environment (repeatable)",
    )
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument(
        "--no-reference", action="store_true", help="leave the reference layers out"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 1 step: a smoke test, not a measurement"
    )
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.steps = args.steps if args.steps is not None else (1 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(NETWORKS))
    bad_env = [pair for pair in args.env if "=" not in pair or pair.startswith("=")]
    if unknown or args.steps < 1 or args.warmup < 0 or rounds < 1 or bad_env:
        parser.error(
            f"--models from {', '.join(NETWORKS)}; --steps >= 1; --warmup >= 0; --rounds >= 1; "
            "--env NAME=VALUE"
        )
    if args.child:
        args.contender, args.model = args.child, models[0]
        return _child(args)
    contenders = [
        name
        for name in CONTENDERS
        if not (name.startswith("pytorch") and (args.no_torch or not _torch_available()))
        and not (name.startswith("reference") and args.no_reference)
    ]
    env = _environment(args.env)
    results = {}
    for model in models:
        per_round = []
        for index in range(rounds):
            order = contenders[index % len(contenders) :] + contenders[: index % len(contenders)]
            per_round.append({name: _run_child(model, name, args, env) for name in order})
        medians = {}
        for name in contenders:
            values = [r[name] for r in per_round if r[name] is not None]
            medians[name] = statistics.median(values) if values else None
        results[model] = {"median_s": medians, "rounds": per_round}
        print(
            f"{NETWORKS[model]}: one training step (gradient + Adam), batch {BATCH}, "
            f"{'x'.join(map(str, IMAGE))}; each contender in a fresh process, "
            f"median of {rounds} round(s) of {args.steps} steps"
        )
        for name, value in medians.items():
            spread = [f"{r[name] * 1e3:.1f}" for r in per_round if r[name] is not None]
            shown = "-" if value is None else f"{value * 1e3:8.2f} ms"
            print(f"  {name:<18} {shown}   rounds: {', '.join(spread)}")
        speedup = _ratios(per_round, "reference float64", "nnlayers float64")
        versus = _ratios(per_round, "nnlayers float32", "pytorch float32")
        if speedup:
            print(f"  float64 speedup over the reference: {speedup:.2f}x")
        if versus:
            print(f"  float32 nnlayers / PyTorch time:    {versus:.2f}")
        results[model]["speedup_float64"], results[model]["float32_vs_torch"] = speedup, versus
        print(flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
