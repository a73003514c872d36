"""``mrdeploy.runtime.Batcher``: concurrent requests of one profile and served shape stacked into one
engine call, each caller's outputs equal to serving it alone; other shapes never held; errors to their
caller; bad arguments."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import mrdeploy.runtime as rt
from mrdeploy.errors import InputError, MrdeployError
from tests.bundles import make_bundle

# seg: spatial outputs at stride 1 and 2 (cropped back after padding) and a pooled one. Profiles
# small=32-64@48, large=96-160@128, s224=224: 20x28 and 30x30 are padded to small's min 32x32 (one served
# shape: they join one batch), 170x180 is padded to 224x224, the others are exact.
SIZES = [(40, 40), (50, 60), (100, 100), (110, 120), (20, 28), (30, 30), (170, 180), (224, 224)]


@pytest.fixture(scope="module")
def seg_runner(tmp_path_factory):
    bundle = make_bundle(tmp_path_factory.mktemp("batcher") / "seg", "seg", batch="1-8@1")
    with rt.load(bundle) as runner:
        yield runner


def _inputs(n, seed=0, sizes=SIZES):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 3, *sizes[i % len(sizes)])).astype(np.float32) for i in range(n)]


def _concurrently(fn, items, threads=16):
    barrier = threading.Barrier(threads)

    def call(x):
        if barrier.n_waiting < threads and not barrier.broken:
            try:
                barrier.wait(timeout=2)
            except threading.BrokenBarrierError:
                pass
        return fn(x)

    with ThreadPoolExecutor(threads) as ex:
        return list(ex.map(call, items))


def _slow_engine(monkeypatch, runner, seconds=0.005):
    """Each engine call (``Runner._run_fitted``, which the Batcher calls) takes at least ``seconds`` (the tiny test model takes microseconds), so that
    concurrent requests overlap and stacking is certain; outputs still come from the real engine."""
    real = runner._run_fitted

    def run_fitted(name, feeds, arrays=None):
        time.sleep(seconds)
        return real(name, feeds, arrays)

    monkeypatch.setattr(runner, "_run_fitted", run_fitted)


@pytest.mark.parametrize("policy", ["pad", "resize"])
def test_outputs_equal_one_by_one_under_16_threads(seg_runner, policy, monkeypatch):
    xs = _inputs(96)
    ref = [seg_runner.run(x, policy=policy) for x in xs]
    _slow_engine(monkeypatch, seg_runner)
    with rt.Batcher(seg_runner, max_batch=8, max_delay_ms=20, policy=policy) as batcher:
        got = _concurrently(batcher.run, xs)
        sizes = dict(batcher.batch_sizes)
    assert sum(b * n for b, n in sizes.items()) == len(xs)  # every request ran exactly once
    assert max(sizes) > 1, sizes  # requests were stacked
    assert max(sizes) <= 8
    for x, a, g in zip(xs, ref, got):
        assert set(g) == {"mask_logits", "coarse", "pooled"}
        for n in a:
            assert g[n].shape == a[n].shape, (x.shape, n)
            assert np.max(np.abs(g[n] - a[n])) <= 1e-5, (x.shape, n)
    # padded inputs got their own size back: 20x28 -> mask 20x28, coarse ceil(/2) = 10x14
    i = SIZES.index((20, 28))
    assert got[i]["mask_logits"].shape == (1, 4, 20, 28) and got[i]["coarse"].shape == (1, 4, 10, 14)


def test_batch_limit_and_multi_row_requests(seg_runner, monkeypatch):
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((b, 3, 48, 48)).astype(np.float32) for b in (1, 2, 3) * 8]
    refs = [seg_runner.run(x) for x in xs]
    _slow_engine(monkeypatch, seg_runner)
    with rt.Batcher(seg_runner, max_batch=3, max_delay_ms=20) as batcher:
        got = _concurrently(batcher.run, xs)
        sizes = dict(batcher.batch_sizes)
    assert max(sizes) <= 3 and sum(b * n for b, n in sizes.items()) == sum(x.shape[0] for x in xs)
    assert max(sizes) > 1, sizes
    for x, g, ref in zip(xs, got, refs):
        assert all(np.max(np.abs(g[n] - ref[n])) <= 1e-5 for n in ref)
        assert g["pooled"].shape == (x.shape[0], 4)


def test_other_shapes_are_not_held_back(seg_runner, monkeypatch):
    slow = (1, 3, 48, 48)
    real = seg_runner._run_fitted

    def run_fitted(name, feeds, arrays=None):
        if next(iter(feeds.values())).shape[1:] == slow[1:]:
            time.sleep(0.4)  # an engine busy with a slow batch of one shape
        return real(name, feeds, arrays)

    monkeypatch.setattr(seg_runner, "_run_fitted", run_fitted)
    x_slow, x_other = np.zeros(slow, np.float32), np.ones((1, 3, 56, 56), np.float32)
    with rt.Batcher(seg_runner, max_batch=8, max_delay_ms=50) as batcher:
        first = batcher.submit(x_slow)  # runs at once: the Batcher was idle
        time.sleep(0.05)
        t0 = time.perf_counter()
        other = batcher.submit(x_other).result(timeout=5)  # same profile, another shape: its own
        other_s = time.perf_counter() - t0  # queue, at most max_delay_ms, not behind the slow batch
        assert other_s < 0.3, other_s
        assert not first.done()
        first.result(timeout=5)
    assert np.max(np.abs(other["mask_logits"] - seg_runner.run_profile("small", x_other)["mask_logits"])) <= 1e-5


def test_one_client_is_not_delayed(seg_runner):
    x = np.zeros((1, 3, 64, 64), np.float32)
    with rt.Batcher(seg_runner, max_batch=8, max_delay_ms=500) as batcher:
        batcher(x)  # warm
        t0 = time.perf_counter()
        for _ in range(5):
            batcher(x)
        per_call = (time.perf_counter() - t0) / 5
    assert per_call < 0.1, per_call  # far below the 500 ms delay: a lone request does not wait


def test_errors_go_to_their_caller(seg_runner, monkeypatch):
    xs = _inputs(16, seed=5, sizes=[(48, 48)])
    bad = xs[3].copy()
    bad[0, 1, 2, 3] = np.nan
    with rt.Batcher(seg_runner, max_batch=8, max_delay_ms=20) as batcher:
        fut = batcher.submit(bad)
        with pytest.raises(InputError, match="expected finite values, got 1 NaN/Inf"):
            fut.result(timeout=5)
        with pytest.raises(InputError, match="expected 3 channels"):
            batcher(np.zeros((1, 4, 48, 48), np.float32))

        # an engine call that fails on one request's rows: only that caller gets the error
        real = seg_runner._run_fitted
        poison = 1234.0

        def run_fitted(name, feeds, arrays=None):
            if np.any(next(iter(feeds.values()))[:, 0, 0, 0] == poison):
                raise MrdeployError("engine failed on the poisoned row")
            return real(name, feeds, arrays)

        monkeypatch.setattr(seg_runner, "_run_fitted", run_fitted)
        xs[7][0, 0, 0, 0] = poison

        def call(x):
            try:
                return batcher.run(x)
            except MrdeployError as e:
                return e

        got = _concurrently(call, xs)
    assert isinstance(got[7], MrdeployError) and "poisoned row" in str(got[7])
    for i, (x, g) in enumerate(zip(xs, got)):
        if i != 7:
            assert np.max(np.abs(g["coarse"] - seg_runner.run_profile("small", x)["coarse"])) <= 1e-5


def test_bad_arguments_and_close(tmp_path, seg_runner):
    with rt.load(make_bundle(tmp_path / "nobatch", "cls")) as runner:
        with pytest.raises(InputError, match=r"max_batch 8 needs a bundle with batch ranges, but every profile "
                                             r".* serves batch 1 only \(small: batch up to 1.*--batch 1-8@1"):
            rt.Batcher(runner, max_batch=8)
        with rt.Batcher(runner, max_batch=1) as b:  # allowed: nothing is stacked
            assert b(np.zeros((1, 3, 48, 48), np.float32)).shape == (1, 5)
    with pytest.raises(InputError, match="max_batch must be an integer of at least 1, got 0"):
        rt.Batcher(seg_runner, max_batch=0)
    with pytest.raises(InputError, match="max_delay_ms must be >= 0, got -1"):
        rt.Batcher(seg_runner, max_delay_ms=-1)
    with pytest.raises(InputError, match="Batcher needs a mrdeploy.runtime.Runner, got str"):
        rt.Batcher("bundle/")

    batcher = rt.Batcher(seg_runner, max_batch=8, max_delay_ms=200)
    futures = [batcher.submit(x) for x in _inputs(10, seed=9)]
    batcher.close()  # serves what is queued, then stops
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(MrdeployError, match="the Batcher is closed"):
        batcher.submit(_inputs(1)[0])
    batcher.close()  # idempotent
    assert not any(t.name.startswith("mrdeploy-batch") for t in threading.enumerate())
    assert seg_runner(_inputs(1)[0])["pooled"].shape == (1, 4)  # the runner stays open
