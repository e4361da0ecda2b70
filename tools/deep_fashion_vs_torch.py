"""DeepConvNet trained end to end on Fashion-MNIST with nnlayers and with PyTorch CPU.

``python tools/deep_fashion_vs_torch.py [--epochs 10] [--eval-samples N]``: the book's
DeepConvNet and schedule (Adam, lr 0.001, batches of 100 drawn at random with replacement,
60,000 / 100 steps an epoch, training and test accuracy after every epoch on the first
``N`` images of each set, all by default), float32, once with ``python -m nntrain`` and
once with the same network (``nnbench.cases.torch_network("deep")``) in PyTorch, each in
its own process, one after the other. Prints per contender the process's wall time (data,
imports, a warm JIT cache's loads, training, evaluation), the time in training and
evaluation, and the test accuracy after each epoch. Needs Debian's
``dataset-fashion-mnist`` and PyTorch (``pip install torch==2.13.0``); run
``python -m nnkernels.precompile float32`` first so that no compile is timed.
``--quick``: 1 epoch of scikit-learn's digits laid out as 28x28, accuracies on 100
images, nnlayers only when PyTorch is missing (a smoke test).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

TORCH_TRAINING = r"""
import json, sys, time
start = time.perf_counter()
import numpy as np
import torch
from nnbench.cases import torch_network
from nntrain.catalog import load_dataset

epochs, eval_samples, dataset, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)
torch.manual_seed(0)
(x_train, t_train), (x_test, t_test) = load_dataset(dataset, None, flatten=False, digits_size=28)
x_train, x_test = torch.from_numpy(x_train), torch.from_numpy(x_test)
t_train, t_test = torch.from_numpy(t_train.astype(np.int64)), torch.from_numpy(
    t_test.astype(np.int64))
net = torch_network("deep")
opt = torch.optim.Adam(net.parameters(), lr=0.001)
loss_fn = torch.nn.CrossEntropyLoss()
rng = np.random.default_rng(0)
steps = max(len(x_train) // 100, 1)

def accuracy(x, t):
    net.eval()
    with torch.no_grad():
        right = sum(int((net(x[i:i + 100]).argmax(1) == t[i:i + 100]).sum())
                    for i in range(0, len(x), 100))
    net.train()
    return right / len(x)

trained = time.perf_counter()
test_acc = []
for epoch in range(epochs):
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(x_train), 100))
        opt.zero_grad()
        loss_fn(net(x_train[idx]), t_train[idx]).backward()
        opt.step()
    n = eval_samples or None
    accuracy(x_train[:n], t_train[:n])
    test_acc.append(accuracy(x_test[:n], t_test[:n]))
done = time.perf_counter()
print(json.dumps({"process": done - start, "training": done - trained, "test_acc": test_acc}))
"""


def nnlayers_run(epochs, eval_samples, dataset_options):
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "nntrain", "--model", "deep", "--dtype", "float32"]
        command += ["--epochs", str(epochs), "--out", out, "--quiet", *dataset_options]
        if eval_samples:
            command += ["--eval-samples", str(eval_samples)]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        process = time.perf_counter() - start
        with open(os.path.join(out, "history.json")) as f:
            history = json.load(f)
    return {
        "process": process,
        "training": history["config"]["wall_time"],
        "test_acc": history["test_acc"],
    }


def torch_run(epochs, eval_samples, dataset, threads):
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            TORCH_TRAINING,
            json.dumps([epochs, eval_samples, dataset, threads]),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python tools/deep_fashion_vs_torch.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--eval-samples", type=int, help="default: every image of both sets")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        dataset, epochs, args.eval_samples = "digits", 1, 100
        options = ["--dataset", "digits", "--digits-size", "28"]
    else:
        dataset, epochs = "fashion-mnist", args.epochs
        options = ["--dataset", "fashion-mnist"]
    import nnkernels

    threads = nnkernels.get_num_threads()
    runs = {"nnlayers": nnlayers_run(epochs, args.eval_samples, options)}
    try:
        import torch  # noqa: F401
    except ImportError:
        if not args.quick:
            raise
    else:
        runs["torch"] = torch_run(epochs, args.eval_samples, dataset, threads)
    print(f"DeepConvNet float32, {dataset}, {epochs} epoch(s), {threads} threads")
    for name, run in runs.items():
        accuracies = " ".join(f"{a:.4f}" for a in run["test_acc"])
        print(
            f"{name:9} process {run['process']:7.1f} s  training+evaluation "
            f"{run['training']:7.1f} s  test accuracy per epoch: {accuracies}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
