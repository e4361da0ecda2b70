"""``set_config(blas_spin_exponent=...)``: OpenBLAS's idle workers sleep sooner, nothing
else changes; importing the library leaves OpenBLAS alone.

Each case runs in a fresh interpreter: the setting restarts OpenBLAS's thread pool, which
must not happen while another test's thread could be inside a BLAS call.
"""

import sys

import pytest

import nnkernels
from _subprocess_helpers import assert_ok, child_env, output_line, run_python

threadpoolctl = pytest.importorskip("threadpoolctl")
NUMPY_ON_OPENBLAS = any(
    info["internal_api"] == "openblas" for info in threadpoolctl.threadpool_info()
)

CHECK_BLAS = """
    import os
    import numpy as np
    from threadpoolctl import threadpool_info
    before = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    import nnkernels
    from nnkernels.threads import spin_state
    print("import", spin_state()["applied"])
    nnkernels.set_config(blas_spin_exponent=16)
    after = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 200)), rng.standard_normal((200, 250))
    exact = (a[:, :, None] * b[None, :, :]).sum(axis=1)
    ok = np.allclose(a @ b, exact)
    nnkernels.set_num_threads(1)
    ok = ok and np.allclose(a @ b, exact)
    nnkernels.set_num_threads(before[0] if before else 1)
    ok = ok and np.allclose(a @ b, exact)
    print("products", ok)
    print("threads", before == after)
    print("env", os.environ.get("OPENBLAS_THREAD_TIMEOUT"))
    print("applied", spin_state()["applied"])
    nnkernels.set_config(blas_spin_exponent=None)  # OpenBLAS's own timeout again
    print("restored", spin_state()["exponent"] is None and np.allclose(a @ b, exact))
"""


@pytest.mark.skipif(not NUMPY_ON_OPENBLAS, reason="NumPy's BLAS is not OpenBLAS")
def test_setting_restarts_openblas_pool_without_changing_results_or_thread_count():
    result = run_python(CHECK_BLAS, env=child_env({"OPENBLAS_THREAD_TIMEOUT": None}))
    assert_ok(result)
    assert output_line(result, "import") == "False"
    assert output_line(result, "restored") == "True"
    assert output_line(result, "products") == "True"
    assert output_line(result, "threads") == "True"
    assert output_line(result, "env") == "None"  # the variable is not left behind
    assert output_line(result, "applied") == "True"


def test_user_setting_is_left_alone():
    result = run_python(CHECK_BLAS, env=child_env({"OPENBLAS_THREAD_TIMEOUT": "28"}))
    assert_ok(result)
    assert output_line(result, "products") == "True"
    assert output_line(result, "env") == "28"
    assert output_line(result, "applied") == "False"


def test_not_applied_while_other_threads_run():
    result = run_python(
        """
        import threading
        import nnkernels
        from nnkernels.threads import spin_state
        stop = threading.Event()
        other = threading.Thread(target=stop.wait)
        other.start()
        nnkernels.set_config(blas_spin_exponent=16)
        stop.set()
        other.join()
        print("applied", spin_state()["applied"], spin_state()["note"].startswith("not applied"))
    """,
        env=child_env({"OPENBLAS_THREAD_TIMEOUT": None}),
    )
    assert_ok(result)
    assert output_line(result, "applied") == "False True"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.skipif(not NUMPY_ON_OPENBLAS, reason="NumPy's BLAS is not OpenBLAS")
def test_library_found_without_threadpoolctl():
    code = """
        import sys
        import numpy as np
        from threadpoolctl import threadpool_info
        infos = threadpool_info()
        expected = sorted(i["filepath"] for i in infos if i["internal_api"] == "openblas")
        sys.modules["threadpoolctl"] = None
        from nnkernels.threads import _openblas_paths
        print("same", _openblas_paths() == expected and len(expected) > 0)
    """
    result = run_python(code, env=child_env({"OPENBLAS_THREAD_TIMEOUT": None}))
    assert_ok(result)
    assert output_line(result, "same") == "True"


@pytest.mark.parametrize("exponent", [3, 31, 16.0, True, "16"])
def test_bad_exponent_is_refused(exponent):
    with pytest.raises(ValueError, match=r"exponent must be an int from 4 to 30, got"):
        nnkernels.threads.limit_blas_spin(exponent)
    with pytest.raises((ValueError, TypeError), match="blas_spin_exponent must be"):
        nnkernels.set_config(blas_spin_exponent=exponent)
