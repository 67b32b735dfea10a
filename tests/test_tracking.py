"""StatisticsLogger: per-row/column mean/std trajectories of Gaussian layers (Figures 3-4)."""

import json

import pytest
import torch

from isogauss_hf import IsoGaussConfig, get_isogauss_model
from isogauss_hf.models.ffn import FFN8Config, FFN8ForImageClassification
from isogauss_hf.tracking import STAT_NAMES, StatisticsLogger

from conftest import tiny_bert


def tiny_ffn(layers=(2, 3), rule="gdu", seed=0):
    torch.manual_seed(seed)
    model = FFN8ForImageClassification(FFN8Config(input_size=12, hidden_size=10, num_layers=4, num_labels=3))
    return get_isogauss_model(model, IsoGaussConfig(layers=list(layers), rule=rule, seed=seed))


def train_steps(model, steps, logger=None, rule="gdu", lr=0.5):
    """Plain loop: forward, backward, distribution step, optimizer step; returns buffer snapshots by step."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(steps, 8, 12, generator=gen)
    y = torch.randint(0, 3, (steps, 8), generator=gen)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    layers = model.isogauss_layers()
    snapshots = {0: {n: {s: getattr(l, s).clone() for s in STAT_NAMES} for n, l in layers.items()}}
    if logger is not None:
        logger.record(0, model, force=True)
    model.train()
    for step in range(1, steps + 1):
        loss = model(pixel_values=x[step - 1], labels=y[step - 1]).loss
        opt.zero_grad()
        loss.backward()
        for layer in layers.values():
            assert layer.distribution_step(rule, lr)
        opt.step()
        snapshots[step] = {n: {s: getattr(l, s).clone() for s in STAT_NAMES} for n, l in layers.items()}
        if logger is not None:
            logger.record(step, model)
    return snapshots


@pytest.mark.parametrize("rule", ["gdu", "wdu"])
@pytest.mark.parametrize("every,expected", [(1, [0, 1, 2, 3, 4, 5]), (2, [0, 2, 4]), (5, [0, 5])])
def test_records_buffers_every_n_steps(rule, every, expected):
    model = tiny_ffn(rule=rule)
    logger = StatisticsLogger(every=every)
    snaps = train_steps(model, 5, logger, rule=rule)
    assert logger.steps == expected
    assert list(logger.data) == ["layers.1", "layers.2"]
    for name in logger.data:
        for stat in STAT_NAMES:
            series = logger.series(name, stat)
            assert series.shape == (len(expected), 10)
            for i, step in enumerate(expected):
                torch.testing.assert_close(series[i], snaps[step][name][stat], rtol=0, atol=0)
    # the statistics really moved, so the equality above is not trivially about constants
    assert not torch.equal(logger.series("layers.1", "row_mean")[0], logger.series("layers.1", "row_mean")[-1])


@pytest.mark.parametrize(
    "rows,cols,exp_rows,exp_cols",
    [
        (None, None, list(range(10)), list(range(10))),
        (3, 2, [0, 4, 9], [0, 9]),  # k evenly spaced, first and last included
        (1, 50, [0], list(range(10))),  # a count above the size keeps everything
        ([7, 1], [0], [7, 1], [0]),  # explicit lists keep their order
    ],
)
def test_row_and_column_subsets(rows, cols, exp_rows, exp_cols):
    model = tiny_ffn()
    logger = StatisticsLogger(rows=rows, cols=cols)
    logger.record(0, model)
    entry = logger.data["layers.1"]
    assert entry["rows"] == exp_rows and entry["cols"] == exp_cols
    layer = model.isogauss_layers()["layers.1"]
    torch.testing.assert_close(logger.series("layers.1", "row_std")[0], layer.row_std[exp_rows])
    torch.testing.assert_close(logger.series("layers.1", "col_mean")[0], layer.col_mean[exp_cols])


def test_json_round_trip(tmp_path):
    model = tiny_ffn()
    logger = StatisticsLogger(every=2, rows=4, cols=3)
    train_steps(model, 4, logger)
    data = logger.to_dict()
    assert data["format"] == "isogauss-statistics-log" and data["version"] == 1
    json.dumps(data)  # JSON-able
    path = tmp_path / "log.json"
    logger.save(path)
    back = StatisticsLogger.load(path)
    assert back.steps == logger.steps == [0, 2, 4]
    assert back.to_dict() == data
    torch.testing.assert_close(back.series("layers.2", "col_std"), logger.series("layers.2", "col_std"))


def test_duplicate_and_decreasing_steps():
    model = tiny_ffn()
    logger = StatisticsLogger(every=1)
    assert logger.record(3, model)
    assert not logger.record(3, model)  # a callback firing twice for one step records once
    assert not logger.should_record(3)
    with pytest.raises(ValueError, match="before the last recorded step 3"):
        logger.record(2, model)
    logger2 = StatisticsLogger(every=4)
    assert not logger2.record(3, model)
    assert logger2.record(3, model, force=True)
    assert logger2.steps == [3]


def test_layer_filter_and_bert_names():
    model = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[2], target_modules=["query", "mlp_in"]))
    names = list(model.isogauss_layers())
    assert len(names) == 2
    logger = StatisticsLogger(layers=[names[1]])
    logger.record(0, model)
    assert list(logger.data) == [names[1]]
    assert logger.data[names[1]]["shape"] == [64, 32]  # mlp_in: 32 -> 64, rows are output features
    with pytest.raises(ValueError, match="not found"):
        StatisticsLogger(layers=["nope"]).record(0, model)
    with pytest.raises(ValueError, match="out of range"):
        StatisticsLogger(rows=[40]).record(0, model)  # query has 32 rows


def test_layers_appearing_later_keep_their_own_steps():
    model = tiny_ffn()
    logger = StatisticsLogger(layers=["layers.1"])
    logger.record(0, model)
    logger.layers = None  # e.g. a second layer selected later
    logger.record(1, model)
    assert logger.layer_steps("layers.1") == [0, 1]
    assert logger.layer_steps("layers.2") == [1]


def test_no_gaussian_layers_and_no_rng_side_effect():
    with pytest.raises(ValueError, match="no Gaussian layers"):
        StatisticsLogger().record(0, torch.nn.Linear(2, 2))
    model = tiny_ffn()
    state = torch.get_rng_state()
    StatisticsLogger().record(0, model)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(every=0), "every must be"),
        (dict(every=True), "every must be"),
        (dict(rows=0), "rows must be"),
        (dict(cols=[1, 1]), "cols must list distinct"),
        (dict(rows=[-1]), "rows must list distinct"),
        (dict(layers=[]), "layers must be"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StatisticsLogger(**kwargs)


def test_series_errors_and_bad_log():
    logger = StatisticsLogger()
    with pytest.raises(ValueError, match="not recorded"):
        logger.series("x", "row_mean")
    with pytest.raises(ValueError, match="stat 'mean' unknown"):
        logger.series("x", "mean")
    with pytest.raises(ValueError, match="not a statistics log"):
        StatisticsLogger.from_dict({"format": "other"})
    with pytest.raises(ValueError, match="version 99 unsupported"):
        StatisticsLogger.from_dict({"format": "isogauss-statistics-log", "version": 99, "every": 1, "steps": [],
                                    "layers": {}})
