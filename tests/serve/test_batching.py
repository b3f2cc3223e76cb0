"""The dynamic batcher, and predictions caught up from the database (restart, overflow)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from amnl.config import InferenceConfig
from amnl.data.cmapss import COLUMNS, load_subset
from amnl.features.online import READING_COLUMNS
from amnl.serve.batcher import DynamicBatcher, Job
from amnl.serve.service import FleetService
from amnl.serve.settings import ServeSettings
from amnl.serve.writer import AssetReadings

from .test_parity import TOLERANCE, offline

RAW = [COLUMNS.index(c) for c in READING_COLUMNS]


def jobs(n: int, start: int = 0) -> list[Job]:
    return [Job("a", 1, start + i, np.full((2, 3), start + i, np.float32)) for i in range(n)]


class Recorder:
    def __init__(self) -> None:
        self.sizes: list[tuple[int, str]] = []
        self.done = threading.Event()
        self.total = 0

    def predict(self, x):
        return x[:, -1, 0], np.tile([1.0, 0, 0], (len(x), 1))

    def on_batch(self, batch):
        self.sizes.append((len(batch.jobs), batch.reason))
        assert np.array_equal(batch.rul, [j.cycle for j in batch.jobs])  # results stay in order
        self.total += len(batch.jobs)
        if self.total >= self.expect:
            self.done.set()


def run_batcher(submit, expect: int, **kw) -> list[tuple[int, str]]:
    rec = Recorder()
    rec.expect = expect
    b = DynamicBatcher(rec.predict, rec.on_batch, **kw)
    b.start()
    submit(b)
    assert rec.done.wait(10)
    b.stop()
    return rec.sizes


def test_concurrent_windows_share_a_pass_and_each_release_has_a_reason():
    sizes = run_batcher(lambda b: b.submit(jobs(10)), 10, max_batch=4, max_wait_ms=50,
                        max_backlog=100)
    assert sizes == [(4, "full"), (4, "full"), (2, "timeout")]
    sizes = run_batcher(lambda b: b.submit(jobs(3)), 3, max_batch=1, max_wait_ms=0,
                        max_backlog=100)
    assert sizes == [(1, "full")] * 3


def test_a_batch_waits_at_most_max_wait_for_more():
    def trickle(b):
        b.submit(jobs(1))
        time.sleep(0.01)
        b.submit(jobs(1, 1))  # arrives within the wait: same pass
    assert run_batcher(trickle, 2, max_batch=8, max_wait_ms=200, max_backlog=100) == [
        (2, "timeout")]


def test_an_overflow_is_caught_up_from_the_store():
    recovered = []

    def catch_up(n):
        out = jobs(min(n, 7 - len(recovered)), 100 + len(recovered))
        recovered.extend(out)
        return out

    rec = Recorder()
    rec.expect = 3 + 7
    b = DynamicBatcher(rec.predict, rec.on_batch, max_batch=4, max_wait_ms=20, max_backlog=3,
                       catch_up=catch_up)
    b.start()
    assert b.submit(jobs(10)) == 3  # 7 left to the database
    assert rec.done.wait(10)
    b.stop()
    assert sum(n for n, r in rec.sizes if r == "catch_up") == 7 and len(recovered) == 7


class Failing:
    """A runtime that fails every forward pass (readings are stored, predictions are not)."""

    def __call__(self, x):
        raise RuntimeError("no")


@pytest.mark.needs_data
def test_a_restart_predicts_what_was_acknowledged_but_not_predicted(tmp_path, predictor,
                                                                     cmapss_dir):
    import asyncio

    test = load_subset(cmapss_dir, "FD001", train=False).test
    engines = {f"e{u}": test.values[test.unit == u] for u in (1, 2)}
    good = predictor()
    settings = ServeSettings(inference=InferenceConfig(runtime="onnx"), db=str(tmp_path / "a.db"))

    broken = type(good)(good.config, good.preprocessor, Failing(), good.model_id, good.inference)
    first = FleetService(settings, broken)
    first.start()
    for a, rows in engines.items():
        asyncio.run(first.ingest([AssetReadings(a, rows[:, 1].astype(np.int64), rows[:, RAW],
                                                [["body", "readings", i] for i in range(len(rows))])]))
    first.writer.wait_idle()
    assert first.store.count("predictions") == 0
    first.batcher.stop(0)  # as if killed: no clean shutdown of the pipeline
    first.engine.dispose()

    second = FleetService(settings, good)  # O(assets) resume, then the catch-up
    second.start()
    try:
        assert second.wait_predicted(30)
        for a, rows in engines.items():
            got = second.store.predictions(a)
            assert [p["cycle"] for p in got] == list(range(1, len(rows) + 1))
            diff = np.abs(np.array([p["rul"] for p in got]) - offline(good, rows))
            assert diff.max() <= TOLERANCE
        assert second.metrics.batches.labels("catch_up")._value.get() >= 1
    finally:
        second.stop()
