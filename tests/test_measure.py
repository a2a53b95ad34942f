import pytest
import torch

from latency import CpuTimer, Settings, measure, measure_many, noise_check, prepare, samples


class FakeTimer:
    """Deterministic timer: each key's cost, plus a burst penalty on the calls listed in `bursts`."""

    def __init__(self, cost, bursts=()):
        self.cost, self.bursts, self.calls, self.order = cost, set(bursts), 0, []

    def __call__(self, fn):
        key = fn()
        self.order.append(key)
        self.calls += 1
        return self.cost[key] * (3.0 if self.calls in self.bursts else 1.0)


def settings(**kw):
    return Settings(**{"warmup": 2, "repeats": 5, **kw})


def test_measure_is_the_median_after_warmup():
    calls = []
    timer = FakeTimer({"a": 4.0}, bursts={2})  # one slow sample out of five

    def fn():
        calls.append(1)
        return "a"

    assert measure(fn, settings(), timer) == 4.0
    assert len(calls) == 2 + 5 and timer.calls == 5


def test_measure_many_keeps_the_lowest_pass_median_and_shuffles():
    cost = {k: float(i + 1) for i, k in enumerate("abcdef")}
    fns = {k: (lambda k=k: (lambda: k)) for k in cost}
    # a burst spanning every sample of the first measured entry in pass one
    timer = FakeTimer(cost, bursts=range(1, 6))
    done = []
    got = measure_many(fns, settings(), passes=2, seed=1, timer=timer, on_done=lambda k, p: done.append((k, p)))
    assert got == cost
    assert len(done) == 12 and {p for _, p in done} == {0, 1}
    first, second = [k for k, _ in done[:6]], [k for k, _ in done[6:]]
    assert sorted(first) == sorted(second) == list("abcdef") and first != second
    single = measure_many(fns, settings(), passes=1, seed=1, timer=FakeTimer(cost, bursts=range(1, 6)))
    assert single != cost  # one pass keeps the burst: why there are several


def test_measure_many_resumes_without_remeasuring():
    cost = {k: float(i + 1) for i, k in enumerate("abcdef")}
    fns = {k: (lambda k=k: (lambda: k)) for k in cost}
    full = measure_many(fns, settings(), passes=2, seed=3, timer=FakeTimer(cost))
    done, seen = {}, []

    def stop_after_seven(key, p):
        seen.append((key, p))
        if len(seen) == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        measure_many(fns, settings(), passes=2, seed=3, timer=FakeTimer(cost), done=done, on_done=stop_after_seven)
    timer = FakeTimer(cost)
    resumed = measure_many(fns, settings(), passes=2, seed=3, timer=timer, done=done)
    assert resumed == full and timer.calls == 5 * 5  # the 5 measurements left, 5 repeats each


def test_noise_check_flags_spread():
    steady = noise_check(lambda: "a", settings(), runs=4, timer=FakeTimer({"a": 2.0}))
    assert steady.spread == 0 and not steady.noisy
    noisy = noise_check(lambda: "a", settings(repeats=1), runs=4, timer=FakeTimer({"a": 2.0}, bursts={3}))
    assert noisy.spread == pytest.approx(2.0) and noisy.noisy and noisy.to_dict()["noisy"]


@pytest.mark.parametrize("kw, message", [
    ({"dtype": "int8"}, "--dtype: expected one of"),
    ({"device": "tpu"}, "--device: expected cpu, cuda"),
    ({"dtype": "fp16"}, "fp16: not supported for CPU"),
    ({"batch_size": 0}, "--batch-size: expected a positive integer"),
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
