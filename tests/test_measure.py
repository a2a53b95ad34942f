import pytest
import torch

from latency import CpuTimer, Settings, measure, measure_many, noise_check, prepare, samples


class FakeTimer:
    """Deterministic timer: each key's cost, times a burst factor on the calls listed in `bursts`
    (a {call: factor} dict, or calls slowed 3x)."""

    def __init__(self, cost, bursts=()):
        self.cost, self.calls, self.order = cost, 0, []
        self.bursts = bursts if isinstance(bursts, dict) else dict.fromkeys(bursts, 3.0)

    def __call__(self, fn):
        key = fn()
        self.order.append(key)
        self.calls += 1
        return self.cost[key] * self.bursts.get(self.calls, 1.0)


def settings(**kw):
    return Settings(**{"warmup": 2, "repeats": 5, **kw})


@pytest.mark.parametrize("statistic, expected", [("median", 4.0), ("p10", 1.2 + 0.9 * 2.8), ("min", 1.2)])
def test_measure_keeps_its_statistic_of_the_repeats_after_warmup(statistic, expected):
    """Ten repeats at 4 ms, two slowed 3x and one at 0.3x: the median ignores all three, p10 lies
    between the fastest two (linear interpolation at rank 0.9), min is the single fastest."""
    calls = []
    timer = FakeTimer({"a": 4.0}, bursts={2: 3.0, 5: 3.0, 7: 0.3})

    def fn():
        calls.append(1)
        return "a"

    got = measure(fn, settings(repeats=10, statistic=statistic), timer)
    assert got == pytest.approx(expected)
    assert len(calls) == 2 + 10 and timer.calls == 10


def test_measure_many_keeps_the_lowest_pass_median_and_shuffles():
    cost = {k: float(i + 1) for i, k in enumerate("abcdef")}
    fns = {k: (lambda k=k: (lambda: k)) for k in cost}
    # a burst spanning every sample of the first measured entry in pass one
    timer = FakeTimer(cost, bursts=range(1, 6))
    done = []
    got = measure_many(fns, settings(), passes=2, seed=1, timer=timer, on_done=lambda k, p: done.append((k, p)), extra_passes=0)
    assert got == cost
    assert len(done) == 12 and {p for _, p in done} == {0, 1}
    first, second = [k for k, _ in done[:6]], [k for k, _ in done[6:]]
    assert sorted(first) == sorted(second) == list("abcdef") and first != second
    single = measure_many(fns, settings(), passes=1, seed=1, timer=FakeTimer(cost, bursts=range(1, 6)), extra_passes=0)
    assert single != cost  # one pass keeps the burst: why there are several


def test_entries_whose_passes_disagree_get_extra_passes():
    """Bursts over both fixed passes of one entry (3x in pass one, 2x in pass two) would leave it
    at 2x; the disagreement of its pass medians buys it more passes until two agree (1x, 1x),
    and the entries whose passes agreed are not measured again."""
    med = settings(statistic="median")  # 3 of an entry's 5 repeats slowed make its pass time slow
    cost = {k: float(i + 1) for i, k in enumerate("abcdef")}
    fns = {k: (lambda k=k: (lambda: k)) for k in cost}
    probe = FakeTimer(cost)
    measure_many(fns, med, passes=2, seed=1, timer=probe, extra_passes=0)
    victim = probe.order[0]  # the first entry measured in pass one
    second = 5 * (6 + probe.order[30::5].index(victim)) + 1  # its first sample in pass two
    bursts = {**dict.fromkeys(range(1, 6), 3.0), **dict.fromkeys(range(second, second + 3), 2.0)}
    fixed = measure_many(fns, med, passes=2, seed=1, timer=FakeTimer(cost, bursts), extra_passes=0)
    assert fixed[victim] == 2 * cost[victim] and all(fixed[k] == cost[k] for k in cost if k != victim)
    extra, measured = [], []
    got = measure_many(fns, med, passes=2, seed=1, timer=FakeTimer(cost, bursts),
                       on_done=lambda k, p: measured.append((k, p)), on_extra_pass=extra.append)
    assert got == cost and extra == [1, 1]  # medians (3x, 2x), then (3x, 2x, 1x), then two 1x agree
    assert measured[12:] == [(victim, 2), (victim, 3)]
    capped = measure_many(fns, med, passes=2, seed=1, timer=FakeTimer(cost, bursts), extra_passes=1)
    assert capped == cost  # one extra pass finds the true minimum, without confirming it


def test_extra_passes_stop_once_two_passes_agree():
    cost = {"a": 1.0, "b": 2.0}
    fns = {k: (lambda k=k: (lambda: k)) for k in cost}
    timer = FakeTimer(cost, bursts=range(1, 6))  # only the first measurement is spoiled
    extra = []
    assert measure_many(fns, settings(), passes=2, seed=0, timer=timer, on_extra_pass=extra.append) == cost
    assert extra == [1] and timer.calls == 5 * 5


@pytest.mark.parametrize("stop_after, left", [(7, 6), (12, 1)])
def test_measure_many_resumes_without_remeasuring(stop_after, left):
    """Stopped in the fixed passes or before the extra one: the resumed run measures what is left
    and decides the extra pass from the medians it was handed, as the uninterrupted run did."""
    cost = {k: float(i + 1) for i, k in enumerate("abcdef")}
    fns = {k: (lambda k=k: (lambda: k)) for k in cost}
    burst = range(1, 6)  # spoils the first measurement: one extra pass for that entry
    full_timer = FakeTimer(cost, burst)
    full = measure_many(fns, settings(), passes=2, seed=3, timer=full_timer)
    assert full == cost and full_timer.calls == 5 * 13
    done, seen = {}, []

    def stop(key, p):
        seen.append((key, p))
        if len(seen) == stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        measure_many(fns, settings(), passes=2, seed=3, timer=FakeTimer(cost, burst), done=done, on_done=stop)
    timer = FakeTimer(cost)
    resumed = measure_many(fns, settings(), passes=2, seed=3, timer=timer, done=done)
    assert resumed == full and timer.calls == 5 * left


def test_noise_check_flags_spread():
    steady = noise_check(lambda: "a", settings(), runs=4, timer=FakeTimer({"a": 2.0}))
    assert steady.spread == 0 and not steady.noisy
    noisy = noise_check(lambda: "a", settings(repeats=1), runs=4, timer=FakeTimer({"a": 2.0}, bursts={3}))
    assert noisy.spread == pytest.approx(2.0) and noisy.noisy and noisy.to_dict()["noisy"]


@pytest.mark.parametrize("kw, message", [
    ({"dtype": "int8"}, "`dtype`: expected one of"),
    ({"device": "tpu"}, "`device`: expected cpu, cuda"),
    ({"dtype": "fp16"}, "fp16: not supported for CPU"),
    ({"batch_size": 0}, "`batch_size`: expected a positive integer"),
    ({"statistic": "mean"}, "`statistic`: expected one of"),
])
def test_settings_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        Settings(**kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cuda_settings_load_anywhere_but_refuse_to_run_without_cuda():
    s = Settings(device="cuda:0", dtype="fp16")  # e.g. read from a table built on a GPU
    with pytest.raises(ValueError, match="CUDA is not available"):
        prepare(torch.nn.Linear(2, 2), s)


def test_prepare_and_cpu_timer():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).train()
    s = settings(dtype="bf16", channels_last=True, threads=1)
    threads = torch.get_num_threads()
    try:
        model = prepare(model, s)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert not model.training and model[0].weight.dtype == torch.bfloat16
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 16, 16, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    times = samples(lambda: model(x), s, CpuTimer())
    assert len(times) == 5 and all(t > 0 for t in times)
    assert s.to_dict()["dtype"] == "bf16"
