"""One-run comparison: ``python -m nnbench.compare`` (also ``python -m nnlayers.bench``).

Times forward+backward of the reference (pure NumPy), nnlayers and PyTorch CPU (when
``import torch`` works) on the project's shape set, in one process, with the contenders
interleaved (A B C A B C ...) and the median over ``--repeat`` rounds reported; warm-up
calls (which include any JIT compile) are not timed. Then, unless ``--no-extras``:

* cold compile: a fresh interpreter with an empty ``NUMBA_CACHE_DIR`` imports nnlayers
  and calls every kernel and layer once per dtype (first call = compile + run);
* warm start: a second interpreter with that now-warm cache times the import and the
  first Convolution forward+backward;
* threads: conv C with 1 and with 2 threads (``nnkernels.set_num_threads``).

The reference computes on NumPy's BLAS, whose idle threads spin about 0.1 s after each
product and would take the cores from the contender timed next; the command therefore
runs with ``OPENBLAS_THREAD_TIMEOUT=4`` (re-starting itself with it unless the variable is
set), so they sleep right away. nnlayers never uses NumPy's BLAS. ``--threads`` limits
the reference's BLAS threads too (with ``threadpoolctl``, the ``bench`` extra).

With ``--torch-separate`` PyTorch runs in a second interpreter, interleaved with the
reference there just as nnlayers is in the first (the reference's calls leave the caches
and the heap in the same state for both).

Ratios: ``speedup`` = reference time / nnlayers time (higher is better); ``vs torch`` =
nnlayers time / PyTorch time (below 1 means nnlayers is faster). Timings on a shared
machine are noisy: compare ratios from one run, not absolute times across runs.
"""

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

import nnkernels

from .cases import CASE_NAMES, DTYPES, build_contenders, get_cases, torch_available
from .timing import time_interleaved

__all__ = ["main", "run_cases", "startup_report", "thread_scaling"]


def _setup_torch_threads(n):
    import torch

    torch.set_num_threads(n)
    return torch.__version__


def run_cases(cases, dtypes, repeat, warmup, contenders, quick=False, log=None, warmup_time=0.0):
    """Time ``contenders`` on every case and dtype; return a list of result rows."""
    rows = []
    for dtype in dtypes:
        for case in cases:
            case = case.scaled(quick)
            fns = build_contenders(case, dtype, contenders)
            row = {
                "case": case.name,
                "kind": case.kind,
                "label": case.label,
                "dtype": dtype,
                "shape": list(case.shape),
                "errors": {},
            }
            present = {}
            for name, fn in fns.items():
                if fn is None:
                    continue
                try:
                    # the first warm-up call compiles (or loads from the cache): never timed
                    fn()
                except NotImplementedError:
                    row["errors"][name] = "NotImplementedError"
                    continue
                present[name] = fn
            timed = time_interleaved(present, repeat, max(warmup - 1, 0), warmup_time)
            for name in contenders:
                med = timed.get(name)
                row[f"{name}_s"] = None if med is None else med[0]
                row[f"{name}_times"] = None if med is None else med[1]
            rows.append(row)
            if log:
                log(
                    f"  {case.name:7s} {dtype:8s} "
                    + "  ".join(f"{k}={_ms(row[k + '_s'])}" for k in contenders)
                )
            del fns, present
            gc.collect()
    return rows


# ------------------------------------------------------------------ subprocesses
def _torch_in_subprocess(args, cases, dtypes, threads):
    """Run only the PyTorch timings in a separate interpreter; return its rows."""
    with tempfile.TemporaryDirectory(prefix="nnbench_") as tmp:
        out = os.path.join(tmp, "torch.json")
        cmd = [
            sys.executable,
            "-m",
            "nnbench.compare",
            "--torch-worker",
            "--json",
            out,
            "--cases",
            ",".join(c.name for c in cases),
            "--dtype",
            ",".join(dtypes),
            "--repeat",
            str(args.repeat),
            "--warmup",
            str(args.warmup),
            "--warmup-time",
            str(args.warmup_time),
            "--threads",
            str(threads),
            "--no-extras",
        ]
        if args.quick:
            cmd.append("--quick")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"torch subprocess failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            return None
        with open(out) as fh:
            return json.load(fh)["results"]


def _probe(mode, dtypes, cache_dir):
    """Run ``python -m nnbench.probe mode`` in a fresh interpreter with
    ``NUMBA_CACHE_DIR=cache_dir``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    with tempfile.TemporaryDirectory(prefix="nnbench_") as tmp:
        out = os.path.join(tmp, "probe.json")
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "nnbench.probe", mode, ",".join(dtypes), out],
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            return {"error": proc.stderr.strip()[-2000:], "wall_s": wall}
        with open(out) as fh:
            result = json.load(fh)
    result["wall_s"] = wall
    return result


def startup_report(dtypes, with_precompile=False):
    """Cold-cache compile times, then warm-cache import + first conv (and precompile)."""
    with tempfile.TemporaryDirectory(prefix="nnbench_cache_") as cache:
        cold = _probe("cold", dtypes, cache)
        warm = _probe("warm", dtypes, cache)
    report = {"cold": cold, "warm": warm}
    if with_precompile:
        if hasattr(nnkernels, "precompile"):
            with tempfile.TemporaryDirectory(prefix="nnbench_cache_") as cache:
                report["precompile"] = _probe("precompile", dtypes, cache)
        else:
            report["precompile"] = {"error": "nnkernels.precompile does not exist"}
    return report


def thread_scaling(dtypes, repeat, warmup, quick=False, case_name="conv_c"):
    """nnlayers forward+backward on ``case_name`` with 1 and 2 threads, interleaved."""
    import numba

    maximum = numba.config.NUMBA_NUM_THREADS
    if maximum < 2:
        return {"error": f"only {maximum} thread available (NUMBA_NUM_THREADS)"}
    previous = nnkernels.get_num_threads()
    case = get_cases(case_name)[0].scaled(quick)
    rows = []
    try:
        for dtype in dtypes:
            run = build_contenders(case, dtype, ("nnlayers",))["nnlayers"]

            def with_threads(n, run=run):
                def call():
                    nnkernels.set_num_threads(n)
                    run()

                return call

            # set_num_threads is inside the call, so both settings run the same code; it
            # costs microseconds against a convolution of tens of milliseconds
            timed = time_interleaved({1: with_threads(1), 2: with_threads(2)}, repeat, warmup)
            rows.append(
                {
                    "case": case.name,
                    "dtype": dtype,
                    "one_thread_s": timed[1][0],
                    "two_threads_s": timed[2][0],
                    "speedup": timed[1][0] / timed[2][0],
                }
            )
    finally:
        nnkernels.set_num_threads(previous)
    return {"case": case.label, "rows": rows}


# ------------------------------------------------------------------ output
def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def _ratio(num, den):
    if num is None or den is None or den == 0:
        return None
    return num / den


def _fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def add_ratios(rows):
    for row in rows:
        row["speedup_vs_reference"] = _ratio(row.get("reference_s"), row.get("nnlayers_s"))
        row["ratio_vs_torch"] = _ratio(row.get("nnlayers_s"), row.get("torch_s"))
    return rows


_HEADERS = (
    "case",
    "dtype",
    "reference ms",
    "nnlayers ms",
    "torch ms",
    "speedup vs ref",
    "nnlayers/torch",
)


def _table_cells(rows):
    return [
        (
            r["label"],
            r["dtype"],
            _ms(r.get("reference_s")),
            _ms(r.get("nnlayers_s")),
            _ms(r.get("torch_s")),
            _fmt_ratio(r.get("speedup_vs_reference")),
            _fmt_ratio(r.get("ratio_vs_torch")),
        )
        for r in rows
    ]


def format_text(rows):
    cells = [_HEADERS] + _table_cells(rows)
    widths = [max(len(str(c[i])) for c in cells) for i in range(len(_HEADERS))]
    lines = []
    for k, c in enumerate(cells):
        lines.append(
            "  ".join(
                str(v).ljust(w) if i < 2 else str(v).rjust(w)
                for i, (v, w) in enumerate(zip(c, widths))
            )
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(rows):
    lines = [
        "| " + " | ".join(_HEADERS) + " |",
        "|" + "|".join([":---", ":---"] + ["---:"] * (len(_HEADERS) - 2)) + "|",
    ]
    for c in _table_cells(rows):
        lines.append("| " + " | ".join(c) + " |")
    return "\n".join(lines)


def format_startup(report):
    lines = []
    cold = report.get("cold", {})
    if "error" in cold:
        lines.append(f"cold compile: FAILED: {cold['error']}")
    elif cold:
        lines.append(
            f"cold cache (fresh NUMBA_CACHE_DIR): import nnlayers {cold['import_s']:.2f} s, "
            f"whole probe {cold['wall_s']:.1f} s. First call = compile + run "
            f"(small input: one share in the calling thread; 'parallel': first call "
            f"shared over threads), then a second call:"
        )
        total = 0.0
        for r in cold["calls"]:
            head = f"  {r['group']:6s} {r['name']:30s} {r['dtype']:8s}"
            if "error" in r:
                lines.append(f"{head} {r['error']}")
                continue
            par = r.get("parallel_first_s")
            total += r["first_s"] + (par or 0.0)
            lines.append(
                f"{head} first {r['first_s']:6.2f} s"
                + (f"   parallel {par:6.2f} s" if par is not None else " " * 20)
                + f"   second {r['second_s'] * 1e3:7.2f} ms"
            )
        lines.append(f"  total compile (sum of first calls): {total:.1f} s")
    warm = report.get("warm", {})
    if "error" in warm:
        lines.append(f"warm start: FAILED: {warm['error']}")
    elif warm:
        lines.append(
            f"warm cache: import nnlayers {warm['import_s']:.2f} s; first {warm['case']} "
            f"{warm['dtype']} fwd+bwd {warm['first_s'] * 1e3:.0f} ms "
            f"(steady {warm['second_s'] * 1e3:.0f} ms)"
        )
    pre = report.get("precompile")
    if pre:
        if "error" in pre:
            lines.append(f"precompile: {pre['error']}")
        else:
            per = pre.get("per_dtype_s") or {}
            lines.append(
                f"cold nnkernels.precompile(): {pre['precompile_s']:.1f} s ("
                + ", ".join(f"{k} {v:.1f} s" for k, v in per.items())
                + f"; import before it {pre['import_s']:.2f} s)"
            )
    return "\n".join(lines)


def format_threads(report):
    if "error" in report:
        return f"threads: {report['error']}"
    lines = [f"threads ({report['case']}, nnlayers fwd+bwd, Numba+BLAS threads):"]
    for r in report["rows"]:
        lines.append(
            f"  {r['dtype']:8s} 1 thread {_ms(r['one_thread_s'])} ms   "
            f"2 threads {_ms(r['two_threads_s'])} ms   speedup {r['speedup']:.2f}x"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ CLI
def _parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="python -m nnlayers.bench",
        description="Compare forward+backward times of the NumPy reference, nnlayers and "
        "PyTorch CPU (if installed) on the project's shape set.",
    )
    ap.add_argument(
        "--dtype",
        default="both",
        help="float32, float64 or both (default both); a comma list also works",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="timed rounds per case; the median is reported (default 5, 2 with --quick)",
    )
    ap.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed calls per contender before timing (default 1, at least 1: "
        "the first call compiles or loads the kernels)",
    )
    ap.add_argument(
        "--warmup-time",
        type=float,
        default=None,
        help="then untimed calls, in turn, until each contender has spent this "
        "many seconds (default 0.1, 0 with --quick; as asv's warmup_time)",
    )
    ap.add_argument(
        "--cases",
        default=None,
        help=f"comma-separated subset of: {','.join(CASE_NAMES)}, or 'all' "
        f"(default: all but DeepConvNet's layers conv_l*)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for Numba and BLAS (nnlayers.set_num_threads) and PyTorch",
    )
    ap.add_argument(
        "--torch-separate",
        action="store_true",
        help="time PyTorch in a separate process (its thread pool then cannot "
        "disturb Numba's and BLAS's, nor the other way round), interleaved "
        "with the reference there as nnlayers is here",
    )
    ap.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    ap.add_argument(
        "--no-extras",
        action="store_true",
        help="skip the cold/warm start-up probes and the thread-scaling run",
    )
    ap.add_argument(
        "--precompile-probe",
        action="store_true",
        help="also time a cold nnkernels.precompile() in a third fresh interpreter",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny batches and 2 rounds: a smoke test, not a measurement",
    )
    ap.add_argument("--json", metavar="OUT", help="also write all results to this JSON file")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.dtype == "both":
        args.dtypes = list(DTYPES)
    else:
        args.dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
        bad = [d for d in args.dtypes if d not in DTYPES]
        if bad or not args.dtypes:
            ap.error(f"--dtype must be float32, float64 or both, got {args.dtype!r}")
    if args.repeat is None:
        args.repeat = 2 if args.quick else 5
    if args.repeat < 1:
        ap.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.warmup < 0:
        ap.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.warmup_time is None:
        args.warmup_time = 0.0 if args.quick else 0.1
    if not 0.0 <= args.warmup_time < float("inf"):
        ap.error(f"--warmup-time must be >= 0 seconds, got {args.warmup_time}")
    try:
        args.case_list = get_cases(args.cases)
    except ValueError as exc:
        ap.error(str(exc))
    return args


def _meta(threads, torch_version):
    import numba

    info = nnkernels.runtime_info()
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "nnkernels": nnkernels.__version__,
        "torch": torch_version,
        "threads": threads,
        "blas": info["blas"].get("config"),
        "cpu": info["cpu"]["model"],
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


#: what the command sets for NumPy's OpenBLAS, the reference's (see the module docstring)
QUIET_BLAS = {"OPENBLAS_THREAD_TIMEOUT": "4"}


def _limit_reference_blas(threads):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(threads, user_api="blas")


def main(argv=None):
    args = _parse_args(argv)
    if args.list:
        for case in args.case_list:
            print(f"{case.name:8s} {case.label}")
        return 0
    if argv is None and not args.torch_worker and not set(QUIET_BLAS) & set(os.environ):
        command = [sys.executable, "-m", "nnbench.compare", *sys.argv[1:]]
        os.execve(sys.executable, command, {**os.environ, **QUIET_BLAS})
    if args.threads is not None:
        nnkernels.set_num_threads(args.threads)
        _limit_reference_blas(args.threads)
    threads = nnkernels.get_num_threads()

    if args.torch_worker:
        torch_version = _setup_torch_threads(threads)
        # interleaved with the reference, as nnlayers is in the main process: each
        # contender then starts with the caches and heap the reference's call left behind
        rows = run_cases(
            args.case_list,
            args.dtypes,
            args.repeat,
            args.warmup,
            ("reference", "torch"),
            quick=args.quick,
            warmup_time=args.warmup_time,
        )
        with open(args.json, "w") as fh:
            json.dump({"meta": _meta(threads, torch_version), "results": rows}, fh)
        return 0

    torch_mode = "none"
    torch_version = None
    if not args.no_torch and torch_available():
        torch_mode = "separate" if args.torch_separate else "interleaved"
        if torch_mode == "interleaved":
            torch_version = _setup_torch_threads(threads)
    contenders = ("reference", "nnlayers") + (("torch",) if torch_mode == "interleaved" else ())

    def log(s):
        print(s, file=sys.stderr, flush=True)

    log(
        f"nnlayers.bench: {threads} thread(s), dtypes {','.join(args.dtypes)}, "
        f"repeat {args.repeat}, warmup {args.warmup} + {args.warmup_time:g} s, torch: {torch_mode}"
        + (" [quick]" if args.quick else "")
    )
    t_start = time.perf_counter()
    rows = run_cases(
        args.case_list,
        args.dtypes,
        args.repeat,
        args.warmup,
        contenders,
        quick=args.quick,
        log=log,
        warmup_time=args.warmup_time,
    )
    if torch_mode == "separate":
        log("  PyTorch timings in a separate process ...")
        torch_rows = _torch_in_subprocess(args, args.case_list, args.dtypes, threads)
        by_key = {(r["case"], r["dtype"]): r for r in torch_rows or []}
        for row in rows:
            other = by_key.get((row["case"], row["dtype"]), {})
            row["torch_s"] = other.get("torch_s")
            row["torch_times"] = other.get("torch_times")
        if torch_rows:
            import importlib.metadata

            torch_version = importlib.metadata.version("torch")
    else:
        for row in rows:
            row.setdefault("torch_s", None)
    add_ratios(rows)

    startup = threads_report = None
    if not args.no_extras:
        log("  start-up probes (cold compile in a fresh cache, then warm start) ...")
        startup = startup_report(args.dtypes, with_precompile=args.precompile_probe)
        log("  thread scaling ...")
        threads_report = thread_scaling(args.dtypes, args.repeat, args.warmup, quick=args.quick)

    meta = _meta(threads, torch_version)
    meta["torch_mode"] = torch_mode
    meta["repeat"], meta["warmup"], meta["quick"] = args.repeat, args.warmup, args.quick
    meta["warmup_time_s"] = args.warmup_time
    meta["elapsed_s"] = time.perf_counter() - t_start

    print(
        f"# nnlayers.bench  (median of {args.repeat}; {threads} thread(s) of {meta['cpu']}; "
        f"numpy {meta['numpy']}, numba {meta['numba']}, torch {torch_version or '-'} "
        f"[{torch_mode}]; the library's BLAS: {meta['blas']})"
    )
    print(format_markdown(rows) if args.markdown else format_text(rows))
    print(
        "speedup vs ref = reference / nnlayers; nnlayers/torch = nnlayers / PyTorch "
        "(below 1: nnlayers faster). Times are forward+backward (im2col/col2im: one call)."
    )
    if torch_mode == "interleaved":
        print(
            "PyTorch ran in this process: its thread pool and Numba's/BLAS's can slow each "
            "other; confirm with --torch-separate."
        )
    if startup is not None:
        print()
        print(format_startup(startup))
    if threads_report is not None:
        print()
        print(format_threads(threads_report))
    log(f"done in {meta['elapsed_s']:.0f} s")

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"meta": meta, "results": rows, "startup": startup, "threads": threads_report},
                fh,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
