"""Streaming features equal the batch pipeline at every cycle (amnl.features.online)."""

from __future__ import annotations

import numpy as np
import pytest

from amnl.config import DataConfig
from amnl.data.cmapss import COLUMNS, EngineTable, load_subset
from amnl.data.synthetic import make_fleet
from amnl.errors import DataError
from amnl.features.online import READING_COLUMNS, AssetState, OnlineFeatures
from amnl.features.pipeline import Preprocessor
from amnl.rundir import bundled_dir, load_config, load_preprocessor

RAW = [COLUMNS.index(c) for c in READING_COLUMNS]


def synthetic_table(n_units: int = 4, n_conditions: int = 1, seed: int = 0) -> EngineTable:
    return EngineTable("synthetic", np.concatenate(make_fleet(n_units, n_conditions, seed=seed)))


def stream(online: OnlineFeatures, table, chunk: int = 1) -> np.ndarray:
    """Every engine of ``table`` fed ``chunk`` cycles at a time: the windows, in row order."""
    out = []
    for start, n in zip(table.starts, table.lengths):
        state = online.new_state()
        for b in range(start, start + n, chunk):
            rows = table.values[b: min(b + chunk, start + n)]
            w, _, _ = online.step(state, rows[:, 1].astype(np.int64), rows[:, RAW])
            out.append(w)
            state = AssetState.from_bytes(state.to_bytes())  # a restart between requests
    return np.concatenate(out)


@pytest.mark.needs_data
@pytest.mark.parametrize("name", ["FD001", "FD002", "FD003", "FD004"])
def test_every_cycle_of_the_test_files_matches_the_batch_windows(cmapss_dir, name):
    cfg = load_config(bundled_dir(name))
    pre = load_preprocessor(bundled_dir(name), cfg)
    test = load_subset(cmapss_dir, name, train=False).test
    batch = pre.windows(test, first_end=0)  # the window at every cycle: the cut histories'
    online = stream(OnlineFeatures(pre), test, chunk=7)
    assert online.shape == (len(test), cfg.data.window, pre.windows(test, last_only=True).x.shape[1])
    np.testing.assert_array_equal(online, batch.arrays())  # bit for bit


def lockstep(online: OnlineFeatures, table) -> np.ndarray:
    """Every engine's cycle k at once (a fleet posting one cycle of all assets), k = 1, 2, ...:
    the windows back in row order."""
    states = [online.new_state() for _ in table.starts]
    out = np.empty((len(table), online.window, online.n_features), np.float32)
    for k in range(int(table.lengths.max())):
        alive = np.flatnonzero(table.lengths > k)
        rows = table.starts[alive] + k
        w, _, _ = online.step_many([states[i] for i in alive], table.values[rows, 1],
                                table.values[rows][:, RAW], [f"unit {i}" for i in alive])
        out[rows] = w
    return out


@pytest.mark.needs_data
def test_a_fleet_stepped_together_matches_too(cmapss_dir):
    cfg = load_config(bundled_dir("FD004"))
    pre = load_preprocessor(bundled_dir("FD004"), cfg)
    test = load_subset(cmapss_dir, "FD004", train=False).test
    np.testing.assert_array_equal(lockstep(OnlineFeatures(pre), test),
                                  pre.windows(test, first_end=0).arrays())


@pytest.mark.parametrize("feed", [stream, lockstep])
@pytest.mark.parametrize("baseline,slow,smooth", [(5, 0.02, 0.1), (0, 1.0, 1.0), (3, 1.0, 0.3)])
def test_every_option_streams_exactly(feed, baseline, slow, smooth):
    """One asset at a time and the fleet in lockstep, with every preprocessing option."""
    table = synthetic_table(n_units=5, n_conditions=3, seed=1)
    cfg = DataConfig(window=8, baseline_cycles=baseline, slow_smoothing=slow, smoothing=smooth,
                     use_settings=True)
    pre = Preprocessor(cfg).fit(table)
    np.testing.assert_array_equal(feed(OnlineFeatures(pre), table),
                                  pre.windows(table, first_end=0).arrays())


def test_a_bad_value_names_the_cycle_and_leaves_the_state_alone():
    table = synthetic_table(n_units=1, seed=2)
    pre = Preprocessor(DataConfig(window=5)).fit(table)
    online = OnlineFeatures(pre)
    state = online.new_state()
    rows = table.values[:4, RAW].copy()
    online.step(state, np.arange(1, 3), rows[:2])
    before = state.to_bytes()
    rows[3, READING_COLUMNS.index("s_2")] = np.nan
    with pytest.raises(DataError, match=r"cycle 4: s_2 \(nan\)"):
        online.step(state, np.arange(3, 5), rows[2:4])
    assert state.to_bytes() == before


def test_a_bad_value_in_a_fleet_step_names_its_asset_by_row():
    """``DataError.row`` says which asset of a fleet step is at fault (the service points the
    client at that reading's field with it)."""
    table = synthetic_table(n_units=3, seed=2)
    pre = Preprocessor(DataConfig(window=5)).fit(table)
    online = OnlineFeatures(pre)
    states = [online.new_state() for _ in range(3)]
    rows = table.values[table.starts, :][:, RAW].copy()
    rows[1, READING_COLUMNS.index("s_2")] = np.inf
    with pytest.raises(DataError, match=r"^b cycle 1: s_2") as info:
        online.step_many(states, np.ones(3, np.int64), rows, ["a", "b", "c"])
    assert info.value.row == 1


def test_a_snapshot_that_is_not_one_is_refused():
    with pytest.raises(DataError):
        AssetState.from_bytes(b"AMNS" + b"\0" * 10)


def test_a_version_1_snapshot_still_reads_and_flags_stay_with_their_rows():
    """Snapshots of the service's databases before the check flags (format 1) still read, with
    no flags; a row's flags are cleared when the ring slot is reused, and survive a restart."""
    import struct

    table = synthetic_table(n_units=1)
    pre = Preprocessor(DataConfig(window=5)).fit(table)
    online = OnlineFeatures(pre)
    state = online.new_state()
    rows = table.values[:7]
    online.step(state, rows[:, 1].astype(np.int64), rows[:, RAW])
    online.record_flags(state, np.arange(1, 8, dtype=np.uint32))
    assert online.recent_flags(state).tolist() == [3, 4, 5, 6, 7]
    again = AssetState.from_bytes(state.to_bytes())
    assert online.recent_flags(again).tolist() == [3, 4, 5, 6, 7]
    online.step(again, rows[-1:, 1].astype(np.int64) + 1, rows[-1:, RAW])  # not recorded
    assert online.recent_flags(again).tolist() == [4, 5, 6, 7, 0]

    blob = state.to_bytes()
    head = struct.Struct("<4sIqqqIIIII")
    fields = list(head.unpack_from(blob))
    fields[1] = 1  # format 1: the same without the flags at the end
    old = head.pack(*fields) + blob[head.size: len(blob) - 4 * 5]
    v1 = AssetState.from_bytes(old)
    np.testing.assert_array_equal(v1.ring, state.ring)
    assert v1.rows == state.rows and not v1.flags.any() and v1.flags.shape == (5,)
