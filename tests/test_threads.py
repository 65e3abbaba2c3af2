"""Threading: results are bitwise identical for any number of threads (and
from one call to the next), effective_n_threads resolves n_threads as
documented, and a threadpoolctl limit around fit reaches every kernel call."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastcnn
from fastcnn import CNNClassifier
from fastcnn._threads import ThreadGovernor
from fastcnn._kernels.correlation import N_REDUCTION_BLOCKS
from fastcnn._kernels.openmp_helpers import omp_max_threads, openmp_enabled
from _helpers.estimators import SMALL
from _helpers.kernel_calls import CORRELATION_GEOMETRIES, CORRELATION_KERNEL_NAMES

# The estimator's fits below stop at a deliberately small max_iter.
pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")

THREAD_COUNTS = [2, 3, 4]  # more threads than the machine's cores is allowed
# One sample; exactly one reduction block per sample; one block with two
# samples; blocks of two and three samples.
BATCH_SIZES = [1, N_REDUCTION_BLOCKS, N_REDUCTION_BLOCKS + 1, 2 * N_REDUCTION_BLOCKS + 1]


def assert_bitwise_equal(outputs, expected, what):
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        assert got.dtype == want.dtype and got.shape == want.shape, what
        assert np.array_equal(got, want), f"{what}: results differ in bits"


def check_thread_independence(call):
    single = call(n_threads=1)
    for n_threads in THREAD_COUNTS + [None, -1]:
        assert_bitwise_equal(call(n_threads=n_threads), single,
                             f"n_threads={n_threads} against n_threads=1")
    for repeat in range(2):
        assert_bitwise_equal(call(n_threads=1), single, "a repeated call")
        assert_bitwise_equal(call(n_threads=4), single, "a repeated 4-thread call")


def test_n_reduction_blocks_is_as_documented():
    assert N_REDUCTION_BLOCKS == 16


def _distinct_correlation_runs():
    """Every correlation function at every geometry of CORRELATION_GEOMETRIES,
    less the pairs that run exactly the kernels of pairs kept:
    correlate{1,2}d_backward runs backward_input, then backward_kernel, on
    the same arguments and thread count; correlate2d_backward_input at 8+
    channels, stride 1 and padding <= kernel - 1 is the mirrored correlation,
    correlate2d_backward_input_mirrored at that geometry."""
    for name in CORRELATION_KERNEL_NAMES:
        if name.endswith("_backward"):
            continue
        for geometry in CORRELATION_GEOMETRIES:
            if (name, geometry) == ("correlate2d_backward_input",
                                    "unit-stride-padded-8-channels"):
                continue
            yield pytest.param(name, geometry, id=f"{name}-{geometry}")


@pytest.mark.parametrize("batch", BATCH_SIZES)
@pytest.mark.parametrize("correlation_kernel_name, correlation_geometry",
                         list(_distinct_correlation_runs()))
def test_correlation_bitwise_identical_for_any_thread_count(
        correlation_kernel_name, correlation_geometry, batch, dtype, gemm_kernel,
        make_kernel_call):
    check_thread_independence(make_kernel_call(correlation_kernel_name, dtype, batch,
                                               correlation_geometry))


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_pooling_bitwise_identical_for_any_thread_count(
        pooling_kernel_name, batch, dtype, make_kernel_call):
    check_thread_independence(make_kernel_call(pooling_kernel_name, dtype, batch))


# -------------------------------------------------------- per-thread scratch

def _scratch_heavy_calls(rng):
    """Kernels of different scratch sizes, as (function, arguments)."""
    x = rng.standard_normal((3, 5, 17, 19))
    w = rng.standard_normal((7, 5, 3, 3))
    gy = fastcnn.functional.correlate2d(x, w, padding=1)
    s = rng.standard_normal((4, 6, 40))
    k = rng.standard_normal((5, 6, 5))
    d = rng.standard_normal((9, 70))
    dw = rng.standard_normal((33, 70))
    F = fastcnn.functional
    return [(F.correlate2d, (x, w), dict(padding=1)),
            (F.correlate2d_backward, (x, w, gy), dict(padding=1)),
            (F.correlate1d, (s, k), dict(stride=2)),
            (F.linear, (d, dw), {}),
            (F.linear_backward_weight, (d, rng.standard_normal((9, 33))), {})]


def _flat(result):
    return [np.asarray(r).copy() for r in (result if isinstance(result, tuple) else (result,))]


def _rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


def test_kernels_running_in_several_python_threads_at_once(rng):
    """Each thread has its own scratch (gemm.c's fcnn_thread_scratch), kept
    from one call to the next: kernels of different sizes running at the
    same time in several Python threads give the bits they give alone."""
    from concurrent.futures import ThreadPoolExecutor
    calls = _scratch_heavy_calls(rng)
    expected = [_flat(fn(*args, n_threads=1, **kw)) for fn, args, kw in calls]
    jobs = [i % len(calls) for i in range(60)]

    def run(i):
        fn, args, kw = calls[i]
        return i, _flat(fn(*args, n_threads=1 + i % 2, **kw))

    with ThreadPoolExecutor(max_workers=6) as pool:
        for i, got in pool.map(run, jobs):
            assert_bitwise_equal(got, expected[i], f"call {i} in a thread pool")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_threads_scratch_goes_with_it(rng):
    """Threads that come and go leave no scratch behind: 60 threads one
    after the other, each needing about 1.1 MB of it."""
    import threading
    x = rng.standard_normal((1, 16, 64, 64))
    w = rng.standard_normal((16, 16, 3, 3))

    def call():
        fastcnn.functional.correlate2d(x, w, padding=1, n_threads=1)

    call()
    before = _rss_mib()
    for _ in range(60):
        thread = threading.Thread(target=call)
        thread.start()
        thread.join()
    assert _rss_mib() - before < 20    # kept, they would add 60 MiB or more


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("channels, kernel", [(64, 5), (128, 3)], ids=["direct", "winograd"])
def test_scratch_too_large_to_keep_is_returned_after_the_call(channels, kernel, rng):
    """A call needing more than 32 MiB of scratch leaves none of it mapped;
    smaller scratch is kept for the next call. Direct: about 46 MiB, a
    64-channel 300 x 300 image, padded, and its outputs over the padded
    width; Winograd's (3 x 3 kernels): about 47 MiB, a 128-channel image
    padded and split into its columns' phases."""
    x = rng.standard_normal((1, channels, 300, 300)).astype(np.float32)
    w = rng.standard_normal((channels, channels, kernel, kernel)).astype(np.float32)
    y = np.empty((1, channels, 300, 300), np.float32)
    y.fill(0)

    before = _rss_mib()
    fastcnn.functional.correlate2d(x, w, padding=kernel // 2, n_threads=1, out=y)
    assert _rss_mib() - before < 16      # kept, it would add over 40 MiB
    assert np.abs(y).max() > 0


# ------------------------------------------------------- effective_n_threads

needs_openmp = pytest.mark.skipif(not openmp_enabled(),
                                  reason="kernels built without OpenMP")


@needs_openmp
@pytest.mark.parametrize("n_threads", [1, 2, 3, 7, 64])
def test_positive_n_threads_is_taken_as_is(n_threads):
    assert fastcnn.effective_n_threads(n_threads) == n_threads
    assert fastcnn.effective_n_threads(np.int64(n_threads)) == n_threads


@needs_openmp
def test_negative_n_threads_counts_back_from_all_cores():
    cpus = os.cpu_count()
    assert fastcnn.effective_n_threads(-1) == cpus
    assert fastcnn.effective_n_threads(-2) == max(1, cpus - 1)
    # never fewer than one thread
    assert fastcnn.effective_n_threads(-(cpus + 10)) == 1


@pytest.mark.parametrize("n_threads", [0, True, False, 1.0, 2.5, -1.0, "2"])
def test_invalid_n_threads_raise_value_error(n_threads):
    with pytest.raises(ValueError, match="n_threads"):
        fastcnn.effective_n_threads(n_threads)


def test_default_is_at_least_one_and_within_the_openmp_limit():
    n_threads = fastcnn.effective_n_threads(None)
    assert isinstance(n_threads, int)
    assert 1 <= n_threads <= max(1, omp_max_threads())
    assert fastcnn.effective_n_threads() == n_threads


@needs_openmp
def test_threadpoolctl_limit_caps_the_default():
    before = fastcnn.effective_n_threads(None)
    with threadpool_limits(limits=1, user_api="openmp"):
        assert fastcnn.effective_n_threads(None) == 1
        # an explicit request is still honoured
        assert fastcnn.effective_n_threads(3) == 3
    assert fastcnn.effective_n_threads(None) == before


def _python_in_subprocess(script, environment_changes, unset=()):
    """What ``script`` prints in a fresh interpreter that imports this
    fastcnn, with the environment changed: OpenMP reads its variables once,
    when it loads."""
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(environment_changes)
    package_root = str(Path(fastcnn.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    return result.stdout.split()


def _effective_n_threads_in_subprocess(environment_changes):
    """effective_n_threads() and what it should be, in a fresh interpreter."""
    script = (
        "import joblib, fastcnn\n"
        "from fastcnn._kernels.openmp_helpers import omp_max_threads\n"
        "physical = joblib.cpu_count(only_physical_cores=True)\n"
        "print(fastcnn.effective_n_threads(), omp_max_threads(), physical)\n"
    )
    output = _python_in_subprocess(script, environment_changes, unset=("OMP_NUM_THREADS",))
    return tuple(int(v) for v in output)


@needs_openmp
def test_omp_num_threads_1_limits_the_default_to_one_thread():
    effective, omp_limit, _ = _effective_n_threads_in_subprocess({"OMP_NUM_THREADS": "1"})
    assert omp_limit == 1
    assert effective == 1


@needs_openmp
def test_default_without_limits_is_the_physical_core_count():
    effective, omp_limit, physical = _effective_n_threads_in_subprocess({})
    assert effective == min(physical, omp_limit)


# ------------------------------------------------------- libgomp's spinning

def _cpu_while_sleeping_in_subprocess(environment_changes):
    """Milliseconds of CPU the process uses during a 300 ms sleep right
    after a 2-thread kernel call (the idle OpenMP thread's spinning), and
    whether GOMP_SPINCOUNT is in its environment afterwards."""
    script = (
        "import os, time, numpy as np\n"
        "import fastcnn.functional as F\n"
        "x = np.ones((64, 4, 16, 16), np.float32)\n"
        "w = np.ones((8, 4, 3, 3), np.float32)\n"
        "F.correlate2d(x, w, n_threads=2)\n"
        "start = time.process_time()\n"
        "time.sleep(0.3)\n"
        "print((time.process_time() - start) * 1e3, 'GOMP_SPINCOUNT' in os.environ)\n"
    )
    cpu, inherited = _python_in_subprocess(
        script, environment_changes, unset=("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"))
    return float(cpu), inherited == "True"


@needs_openmp
def test_idle_openmp_threads_stop_spinning_soon():
    cpu, inherited = _cpu_while_sleeping_in_subprocess({})
    assert cpu < 10, f"{cpu:.1f} ms of CPU while the process slept 300 ms"
    assert not inherited   # child processes do not get the setting


@needs_openmp
def test_a_users_spin_setting_is_left_to_rule():
    # about 27 s of spinning: the thread spins through the whole sleep
    cpu, inherited = _cpu_while_sleeping_in_subprocess({"GOMP_SPINCOUNT": "1000000000"})
    assert cpu > 30, f"only {cpu:.1f} ms of CPU: the user's GOMP_SPINCOUNT was overridden"
    assert inherited


# ----------------------------------------------------------- ThreadGovernor

class _Machine:
    """Steps whose seconds per sample depend on the thread count, and the
    calling thread's run-queue waits, as a fake scheduler_times."""

    def __init__(self, pace, waiting=0.0):
        self.pace, self.waiting = dict(pace), waiting
        self.ran = self.waited = 0.0

    def scheduler_times(self):
        return self.ran, self.waited

    def process_waits(self):
        # the calling thread's waits stand for all the process's threads'
        return self.waited

    def run(self, governor, steps, n=64):
        used = []
        for _ in range(steps):
            count = governor.threads()
            seconds = self.pace[count] * n
            self.ran += seconds * (1 - self.waiting)
            self.waited += seconds * self.waiting
            governor.record(seconds, n)
            used.append(count)
        return used


def _governor(machine, most=2, **kw):
    return ThreadGovernor(most, scheduler_times=machine.scheduler_times,
                          process_waits=machine.process_waits, **kw)


def test_governor_settles_on_the_faster_count_on_a_quiet_machine():
    machine = _Machine({1: 1.8e-6, 2: 1e-6})
    governor = _governor(machine)
    used = machine.run(governor, 2000)
    assert used[-1] == 2 and used.count(2) > 0.97 * len(used)
    # probes down cost 0.8 of a step each: about 2% of the time at most
    extra = sum(machine.pace[c] - machine.pace[2] for c in used) / (len(used) * machine.pace[2])
    assert extra < 0.03


def test_governor_probes_down_only_where_its_threads_wait_for_cpus():
    # on a machine of its own fewer threads cannot be faster: no probe
    # down once settled; where its threads wait for CPUs, it looks
    quiet = _Machine({1: 1.8e-6, 2: 1e-6})
    used = quiet.run(_governor(quiet), 2000)
    assert used[-1] == 2 and used[10:].count(1) == 0
    shared = _Machine({1: 1.8e-6, 2: 1e-6}, waiting=0.05)
    used = shared.run(_governor(shared), 2000)
    assert used[-1] == 2 and 10 < used[10:].count(1) < 0.03 * 2000


def test_governor_probes_up_after_its_first_step():
    # a fit of few long steps (a large network's) runs nearly all of them
    # at the faster count
    machine = _Machine({1: 1.8e-6, 2: 1e-6})
    assert machine.run(_governor(machine), 4) == [1, 2, 2, 2]


def test_governor_keeps_one_thread_where_more_are_much_slower():
    # the collapse seen on a loaded machine: 300 ms steps at two threads
    machine = _Machine({1: 0.3e-3 / 64, 2: 300e-3 / 64})
    governor = _governor(machine)
    used = machine.run(governor, 5000)
    # one probe up (its cost then bars another for 50 times as long)
    assert used.count(2) == 1
    seconds = sum(machine.pace[c] for c in used) * 64
    assert seconds < 1.05 * 5000 * 0.3e-3 + 0.3


def test_governor_does_not_probe_up_while_its_thread_waits_for_a_cpu():
    machine = _Machine({1: 0.3e-3 / 64, 2: 300e-3 / 64}, waiting=0.5)
    used = machine.run(_governor(machine), 5000)
    assert used.count(2) == 0


def test_governor_leaves_a_count_that_turns_slow_within_two_steps():
    machine = _Machine({1: 1.8e-6, 2: 1e-6})
    governor = _governor(machine)
    machine.run(governor, 200)
    assert governor.current == 2
    machine.pace[2] = 1000e-6       # load arrives
    used = machine.run(governor, 5)
    assert governor.current == 1 and used.count(2) <= 2
    machine.pace[2] = 1e-6          # and leaves
    machine.run(governor, 5000)
    assert governor.current == 2


@pytest.mark.parametrize("fast_steps, settles_on, most_at_one", [
    # an interruption (another process's time slice, a page fault storm)
    # makes one step slow now and then: no reason to leave the faster
    # count; the regular probes down only (about one in 35 steps, on a
    # machine shared enough that the governor probes), none after the slow
    # steps
    (30, 2, 25),
    # load that takes a core half of the time: the median of three steps
    # is a slow one whenever two of them are
    (1, 1, None)], ids=["one-slow-step-in-31", "every-other-step-slow"])
def test_governor_tells_passing_slow_steps_from_load(fast_steps, settles_on, most_at_one):
    machine = _Machine({1: 1.8e-6, 2: 1e-6}, waiting=0.05)
    governor = _governor(machine)
    machine.run(governor, 200)
    used = []
    for _ in range(20):
        machine.pace[2] = 50e-6
        used += machine.run(governor, 1)
        machine.pace[2] = 1e-6
        used += machine.run(governor, fast_steps)
    assert governor.current == settles_on
    if most_at_one is not None:
        assert used.count(1) <= most_at_one


def test_governor_does_not_probe_every_other_step_on_a_slower_machine():
    # every count turns slow at once (another process took both cores):
    # the probe down loses, and the slower pace becomes the count's normal
    machine = _Machine({1: 1.8e-6, 2: 1e-6})
    governor = _governor(machine)
    machine.run(governor, 200)
    machine.pace = {1: 18e-6, 2: 10e-6}
    used = machine.run(governor, 400)
    assert governor.current == 2 and used.count(1) <= 400 * 0.05


def test_governor_explores_halves_and_doubles_on_larger_machines():
    machine = _Machine({1: 8e-6, 2: 4.2e-6, 4: 2.5e-6, 8: 3e-6})
    governor = _governor(machine, most=8)
    used = machine.run(governor, 3000)
    assert governor.current == 4 and set(used) <= {1, 2, 4, 8}


@pytest.mark.parametrize("n_threads", [1, 3])
def test_a_fixed_thread_count_never_changes(n_threads):
    machine = _Machine({n: 1e-6 * n for n in range(1, 7)})
    governor = _governor(machine, most=n_threads, least=n_threads)
    assert set(machine.run(governor, 500)) == {n_threads}


def test_training_whatever_the_governor_picks_is_bitwise_the_same(monkeypatch):
    from sklearn.datasets import load_digits

    import fastcnn._training as training_module
    X, y = load_digits(return_X_y=True)
    X, y = X[:300] / 16, y[:300]

    def fit(n_threads):
        return fastcnn.CNNClassifier(
            filters=(4,), hidden_layer_sizes=(16,), input_shape=(1, 8, 8),
            batch_size=32, max_iter=3, random_state=0, n_threads=n_threads).fit(X, y)

    single = fit(1)

    class Flipping(ThreadGovernor):
        """Counts cycling through 2, 1, 3, whatever the steps take."""
        def threads(self):
            self.calls = getattr(self, "calls", 0) + 1
            return (2, 1, 3)[self.calls % 3]

    monkeypatch.setattr(training_module, "ThreadGovernor", Flipping)
    flipped = fit(None)
    assert flipped._thread_governor.calls >= 3 * 10
    for got, want in zip(flipped.coefs_ + flipped.intercepts_,
                         single.coefs_ + single.intercepts_):
        assert np.array_equal(got, want)


# ----------------------------------------------- threads seen by the kernels

def _record_kernel_threads(monkeypatch):
    """The n_threads every kernel call of a fit receives: the network's
    layers run calls prepared with functional.prepare, the fit loop calls
    functions."""
    seen = set()
    run = fastcnn.functional._calls.KernelCall.run

    def run_spy(self, n_threads):
        seen.add(n_threads)
        return run(self, n_threads)
    monkeypatch.setattr(fastcnn.functional._calls.KernelCall, "run", run_spy)
    for name in ("adam_update", "take_samples"):
        original = getattr(fastcnn.functional, name)

        def spy(*args, _original=original, **kwargs):
            bound = kwargs.get("n_threads")
            if bound is None:
                # n_threads may be positional
                import inspect
                names = list(inspect.signature(_original).parameters)
                index = names.index("n_threads")
                bound = args[index] if len(args) > index else None
            seen.add(bound)
            return _original(*args, **kwargs)
        monkeypatch.setattr(fastcnn.functional, name, spy)
    return seen


def test_threadpool_limits_around_fit_makes_it_single_threaded(small_digits, monkeypatch):
    from threadpoolctl import threadpool_limits
    X, y = small_digits
    seen = _record_kernel_threads(monkeypatch)
    with threadpool_limits(limits=1):
        limited = CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y)
    assert seen == {1}
    seen.clear()
    CNNClassifier(input_shape=(1, 8, 8), n_threads=2, **SMALL).fit(X, y)
    assert seen == {2}
    reference = CNNClassifier(input_shape=(1, 8, 8), n_threads=3, **SMALL).fit(X, y)
    np.testing.assert_array_equal(limited.network_.params, reference.network_.params)
