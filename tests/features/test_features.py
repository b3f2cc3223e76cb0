"""Preprocessing on synthetic fleets: shapes, padding, labels, no leakage, state round trip."""

from __future__ import annotations

import numpy as np
import pytest

from amnl.config import DataConfig
from amnl.data.cmapss import EngineTable, read_table
from amnl.data.synthetic import write_fleet
from amnl.features import (
    OperatingConditions,
    Preprocessor,
    health_labels,
    train_rul,
    window_index,
)
from amnl.features.dataset import WindowBatches, class_balanced_weights


@pytest.fixture(scope="module")
def fleet6(tmp_path_factory):
    d = tmp_path_factory.mktemp("fleet6")
    return write_fleet(d, "FD002", n_train=10, n_test=5, n_conditions=6, seed=3)


def test_window_index_front_pads_short_runs():
    idx = window_index(np.array([0, 5]), np.array([5, 2]), window=4, last_only=True)
    assert idx.tolist() == [[1, 2, 3, 4], [5, 5, 5, 6]]


def test_window_index_all_windows_stride_one():
    idx = window_index(np.array([0, 10]), np.array([10, 3]), window=4)
    # engine 1: ends at rows 3..9 (7 windows); engine 2 shorter than W: one padded window
    assert len(idx) == 8
    assert idx[0].tolist() == [0, 1, 2, 3] and idx[6].tolist() == [6, 7, 8, 9]
    assert idx[7].tolist() == [10, 10, 11, 12]
    assert idx.max() < 13  # never crosses into another engine


def test_window_index_first_end_gives_every_cut():
    """first_end=1: a window ending at every cycle from the second on, front-padded; each is
    the last window of the engine cut after that cycle."""
    idx = window_index(np.array([0, 6]), np.array([6, 1]), window=4, first_end=1)
    assert idx.tolist() == [[0, 0, 0, 1], [0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4],
                            [2, 3, 4, 5], [6, 6, 6, 6]]
    for end in range(1, 6):
        cut = window_index(np.array([0]), np.array([end + 1]), window=4, last_only=True)
        assert cut[0].tolist() == idx[end - 1].tolist()


def test_rul_labels_capped_and_health_boundaries():
    rul = train_rul(np.array([200]), cap=125)
    assert rul[0] == 125 and rul[-1] == 0 and rul[-126] == 125 and rul[-125] == 124
    assert health_labels(np.array([125, 81, 80, 31, 30, 0]), (80.0, 30.0)).tolist() == [0, 0, 1, 1, 2, 2]


def test_conditions_found(fleet6, tmp_path):
    t6 = read_table(fleet6["train"])
    settings = t6.columns(["setting_1", "setting_2", "setting_3"])
    assert OperatingConditions().fit(settings).n_conditions_ == 6
    one = write_fleet(tmp_path, "FD001", n_train=4, n_test=2, n_conditions=1)
    t1 = read_table(one["train"])
    assert OperatingConditions().fit(t1.columns(["setting_1", "setting_2", "setting_3"])).n_conditions_ == 1


def test_scaler_uses_training_engines_only(fleet6):
    table = read_table(fleet6["train"])
    pre = Preprocessor(DataConfig(val_fraction=0.3, split_seed=1))
    train_units, val_units = pre.split_units(table)
    assert len(val_units) == 3 and not set(train_units) & set(val_units)
    pre.fit(table, units=train_units)
    rows = np.isin(table.unit, train_units)
    x = pre.transform(table)
    # Statistics come from the training rows: they are standardised per regime...
    cond = pre.conditions_.predict(table.columns(["setting_1", "setting_2", "setting_3"]))
    for c in range(6):
        sel = rows & (cond == c)
        np.testing.assert_allclose(x[sel].mean(0), 0, atol=1e-4)
    # ...and refitting with the validation engines would change them (the test is not vacuous).
    pre_all = Preprocessor(pre.config).fit(table)
    assert not np.allclose(pre_all.scaler_.mean_, pre.scaler_.mean_)


def test_windows_shapes_and_labels(fleet6):
    table = read_table(fleet6["train"])
    pre = Preprocessor(DataConfig(window=30)).fit(table)
    w = pre.windows(table)
    expected = sum(max(n - 29, 1) for n in table.lengths)
    assert w.arrays().shape == (expected, 30, 14)
    assert w.arrays().dtype == np.float32
    last = pre.windows(table, last_only=True, rul_after_end=np.zeros(len(table.units)))
    assert len(last) == len(table.units) and np.all(last.rul == 0) and np.all(last.health == 2)
    unknown = pre.windows(table, last_only=True)  # histories to predict on: no labels
    assert np.isnan(unknown.rul).all() and (unknown.health == -1).all()


def test_test_windows_use_rul_file(fleet6):
    train, test = read_table(fleet6["train"]), read_table(fleet6["test"])
    rul = np.loadtxt(fleet6["rul"])
    pre = Preprocessor().fit(train)
    last = pre.windows(test, last_only=True, rul_after_end=rul)
    np.testing.assert_array_equal(last.rul, np.minimum(rul, 125))


def test_state_round_trip(fleet6, tmp_path):
    table = read_table(fleet6["train"])
    pre = Preprocessor(DataConfig(use_settings=True)).fit(table)
    pre.save(tmp_path)
    # exactly the two files of the contract, plain arrays: loading refuses pickled objects
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preprocess.json", "preprocess.npz"]
    with np.load(tmp_path / "preprocess.npz", allow_pickle=False) as z:
        assert z.files and all(z[k].dtype != object for k in z.files)
    back = Preprocessor.load(tmp_path, pre.config)
    np.testing.assert_array_equal(back.transform(table), pre.transform(table))
    assert back.transform(table).shape[1] == 17


def test_unfitted_preprocessor_refuses(fleet6):
    with pytest.raises(RuntimeError, match="not fitted"):
        Preprocessor().transform(read_table(fleet6["train"]))


def test_batches_types(fleet6):
    table = read_table(fleet6["train"])
    pre = Preprocessor().fit(table)
    batches = WindowBatches(pre.windows(table), batch_size=16, shuffle=True, max_windows=40)
    got = list(batches)
    assert len(got) == len(batches) == 3
    x, rul, health = got[0]
    assert x.shape == (16, 30, 14) and x.dtype.is_floating_point and str(x.dtype) == "torch.float32"
    assert rul.shape == (16,) and str(rul.dtype) == "torch.float32"
    assert health.shape == (16,) and str(health.dtype) == "torch.int64"


def test_health_balanced_sampling_draws_classes_alike(fleet6):
    table = read_table(fleet6["train"])
    pre = Preprocessor().fit(table)
    w = pre.windows(table)
    share = np.bincount(w.health, minlength=3) / len(w)
    assert share.max() > 0.5  # the healthy phase dominates the plain windows
    batches = WindowBatches(w, batch_size=100, shuffle=True,
                            weights=class_balanced_weights(w.health))
    drawn = np.concatenate([np.concatenate([h.numpy() for _, _, h in batches]) for _ in range(5)])
    assert len(drawn) == 5 * len(w)  # an epoch keeps its size
    np.testing.assert_allclose(np.bincount(drawn, minlength=3) / len(drawn), 1 / 3, atol=0.04)
    with pytest.raises(ValueError, match="weights"):
        WindowBatches(w, weights=np.ones(3))


def test_smoothing_is_causal_per_engine(fleet6):
    table = read_table(fleet6["train"])
    raw = Preprocessor(DataConfig()).fit(table).transform(table)
    pre = Preprocessor(DataConfig(smoothing=0.2)).fit(table)
    smooth = pre.transform(table)
    s, n = table.starts, table.lengths
    # Each engine restarts the filter at its first row, and rows follow the recurrence.
    np.testing.assert_allclose(smooth[s], raw[s], atol=1e-6)
    e0 = slice(s[1] + 1, s[1] + n[1])
    prev = slice(s[1], s[1] + n[1] - 1)
    np.testing.assert_allclose(smooth[e0], 0.2 * raw[e0] + 0.8 * smooth[prev], atol=1e-5)
    # Causal: cutting an engine's future off leaves its past unchanged.
    head = EngineTable(table.path, table.values[s[0]:s[0] + 20])
    np.testing.assert_allclose(pre.transform(head), smooth[s[0]:s[0] + 20], atol=1e-6)
    assert smooth.std() < raw.std()
    with pytest.raises(ValueError, match="smoothing"):
        DataConfig(smoothing=0.0)


def test_baseline_deviation_is_causal_and_doubles_inputs(fleet6):
    table = read_table(fleet6["train"])
    cfg = DataConfig(smoothing=0.2, baseline_cycles=10)
    assert cfg.n_features == 28
    pre = Preprocessor(cfg).fit(table)
    x = pre.transform(table)
    plain = Preprocessor(DataConfig(smoothing=0.2)).fit(table).transform(table)
    s = table.starts
    assert x.shape == (len(table), 28)
    np.testing.assert_allclose(x[:, :14], plain, atol=1e-6)
    # After the baseline cycles, the deviation is the row minus the mean of the first 10 rows.
    e = slice(s[1], s[1] + table.lengths[1])
    np.testing.assert_allclose(x[e][10:, 14:], plain[e][10:] - plain[e][:10].mean(0), atol=1e-5)
    np.testing.assert_allclose(x[s, 14:], 0.0, atol=1e-6)
    # Causal: cutting an engine's future off (even inside the baseline) leaves its past unchanged.
    for cut in (5, 20):
        head = EngineTable(table.path, table.values[s[0]:s[0] + cut])
        np.testing.assert_allclose(pre.transform(head), x[s[0]:s[0] + cut], atol=1e-5)
    assert pre.windows(table).arrays().shape[-1] == 28
    with pytest.raises(ValueError, match="baseline_cycles"):
        DataConfig(baseline_cycles=-1)


def test_cycle_feature_is_the_age(fleet6):
    table = read_table(fleet6["train"])
    cfg = DataConfig(cycle_feature=True)
    assert cfg.n_features == 15
    x = Preprocessor(cfg).fit(table).transform(table)
    np.testing.assert_allclose(x[:, -1], table.cycle / 100.0, rtol=1e-6)
    np.testing.assert_allclose(x[table.starts, -1], 0.01, rtol=1e-6)  # histories start at 1


def test_slow_smoothing_adds_a_causal_long_memory(fleet6):
    table = read_table(fleet6["train"])
    cfg = DataConfig(smoothing=0.2, slow_smoothing=0.02, cycle_feature=True)
    assert cfg.n_features == 29
    pre = Preprocessor(cfg).fit(table)
    x = pre.transform(table)
    fast = Preprocessor(DataConfig(smoothing=0.2)).fit(table).transform(table)
    slow = Preprocessor(DataConfig(smoothing=0.02)).fit(table).transform(table)
    assert x.shape == (len(table), 29)
    np.testing.assert_allclose(x[:, :14], fast, atol=1e-6)
    np.testing.assert_allclose(x[:, 14:28], slow, atol=1e-6)
    np.testing.assert_allclose(x[:, 28], table.cycle / 100.0, rtol=1e-6)
    s = table.starts
    head = EngineTable(table.path, table.values[s[0]:s[0] + 15])  # causal: the past is unchanged
    np.testing.assert_allclose(pre.transform(head), x[s[0]:s[0] + 15], atol=1e-5)
    with pytest.raises(ValueError, match="slow_smoothing"):
        DataConfig(slow_smoothing=0.0)
