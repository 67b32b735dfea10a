"""``isogauss_hf.analysis``: Eq. 2 fit metrics, the block scan, ``suggest_layers`` and weight drift.

Tiny local models from ``conftest``; every expected value is computed independently here (brute-force
integrals, a seeded conversion of a copy, a model whose block is an identity).
"""

import copy
import math

import pytest
import torch

from conftest import tiny_bert, tiny_gpt2
from isogauss_hf import IsoGaussConfig, get_isogauss_model
from isogauss_hf.analysis import (
    SCORES,
    BlockScan,
    ScanResult,
    fit_metrics,
    fit_model,
    iter_matrices,
    ks_to_normal,
    make_calibration_batches,
    parse_auto_layers,
    scan_blocks,
    stable_rank,
    suggest_layers,
    wasserstein_1d,
    wasserstein_to_normal,
    weight_drift,
    write_report,
)
from isogauss_hf.errors import UsageError
from isogauss_hf.functional import eq2_distribution


def _eq2_matrix(n=256, m=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    rm, cm = 0.01 * torch.randn(n, generator=g), 0.01 * torch.randn(m, generator=g)
    rs, cs = 0.02 * (0.5 + torch.rand(n, generator=g)), 0.02 * (0.5 + torch.rand(m, generator=g))
    mean, var = eq2_distribution(rm, rs, cm, cs)
    return mean + var.sqrt() * torch.randn(n, m, generator=g)


def _batches(vocab=100, labels=3, n=3, bs=4, seq=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(2, vocab, (bs, seq), generator=g)
        mask = torch.ones_like(ids)
        mask[0, seq - 2:] = 0  # a padded example: its pad tokens must not count
        out.append({"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, labels, (bs,), generator=g)})
    return out


def _loss(model, batches):
    with torch.no_grad():
        total = sum(float(model(**b).loss) * len(b["labels"]) for b in batches)
    return total / sum(len(b["labels"]) for b in batches)


# ------------------------------------------------------------------------------------------ fit metrics
def test_matrix_drawn_from_eq2_fits_and_a_heavy_tailed_one_does_not():
    good = fit_metrics(_eq2_matrix())
    assert good["ks"] < 0.03 and abs(good["kurtosis"]) < 0.2 and good["wasserstein"] < 0.06
    assert abs(good["z_mean"]) < 0.01 and abs(good["z_std"] - 1) < 0.06
    g = torch.Generator().manual_seed(1)
    chi2 = torch.randn(3, 256, 512, generator=g).square().sum(0)
    t = 0.02 * torch.randn(256, 512, generator=g) / (chi2 / 3).sqrt()  # Student-t, 3 degrees of freedom
    bad = fit_metrics(t)
    assert bad["kurtosis"] > 3 and bad["ks"] > 2 * good["ks"] and bad["wasserstein"] > 2 * good["wasserstein"]


def test_normal_distances_match_brute_force():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, generator=g, dtype=torch.float64)
    u = (torch.arange(400_000, dtype=torch.float64) + 0.5) / 400_000
    empirical = x.sort().values[(u * 500).long().clamp(max=499)]
    brute_w1 = float((empirical - torch.special.ndtri(u)).abs().mean())
    assert wasserstein_to_normal(x) == pytest.approx(brute_w1, rel=2e-3)
    xs = x.sort().values
    grid = torch.linspace(-6, 6, 200_001, dtype=torch.float64)
    brute_ks = float((torch.searchsorted(xs, grid, right=True) / 500.0 - torch.special.ndtr(grid)).abs().max())
    assert ks_to_normal(x) == pytest.approx(brute_ks, abs=2e-3)
    assert wasserstein_to_normal(torch.randn(200_000, generator=g) + 0.5) == pytest.approx(0.5, abs=0.01)


def test_wasserstein_1d_and_stable_rank():
    a = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    assert wasserstein_1d(a, a + 0.25) == pytest.approx(0.25, abs=1e-9)
    assert wasserstein_1d(a, a[torch.randperm(1000)]) == pytest.approx(0.0, abs=1e-12)
    assert stable_rank(torch.outer(torch.arange(1.0, 9.0), torch.ones(5))) == pytest.approx(1.0, rel=1e-6)
    assert stable_rank(torch.eye(6)) == pytest.approx(6.0, rel=1e-6)


def test_mean_share_is_near_one_when_the_mean_dominates():
    noise = torch.randn(40, 60, generator=torch.Generator().manual_seed(3))
    w = 3.0 + 0.01 * noise  # Eq. 2's mean (about 3 everywhere) carries nearly all of ||W||^2
    assert fit_metrics(w)["mean_share"] > 0.999
    assert fit_metrics(_eq2_matrix())["mean_share"] < 0.2


def test_gpt2_conv1d_is_transposed_and_fused_c_attn_split():
    model = tiny_gpt2()
    refs = {r.name: r for r in iter_matrices(model, layers=[1])}
    c_attn = model.transformer.h[0].attn.c_attn.weight  # Conv1D: (in, out)
    assert [k for k in refs if "c_attn" in k] == [f"transformer.h.0.attn.c_attn[{k}]" for k in ("query", "key", "value")]
    assert torch.equal(refs["transformer.h.0.attn.c_attn[key]"].weight, c_attn.t()[32:64])
    assert refs["transformer.h.0.mlp.c_fc"].weight.shape == (128, 32)  # rows = output features
    assert {r.kind for r in refs.values()} == {"query", "key", "value", "attention_output", "mlp_in", "mlp_out"}


def test_pattern_path_and_bad_selection():
    model = tiny_bert(layers=2)
    fits = fit_model(model, targets=[r".*intermediate\.dense"])
    assert [f.name for f in fits] == [f"bert.encoder.layer.{i}.intermediate.dense" for i in (0, 1)]
    with pytest.raises(UsageError, match="out of range"):
        list(iter_matrices(model, layers=[3]))


# ------------------------------------------------------------------------------------------ block scan
def test_identity_block_has_zero_influence_and_costs_nothing():
    model = tiny_bert(layers=3)
    model.bert.encoder.layer[1].forward = lambda hidden_states, *a, **k: hidden_states
    result = scan_blocks(model, _batches(), progress=False)
    ident = result.block(2)
    assert ident.block_influence == pytest.approx(0.0, abs=1e-12)
    assert ident.removal_loss == pytest.approx(0.0, abs=1e-6)  # replayed blocks are bit for bit the dense ones
    assert ident.replacement_loss == pytest.approx(0.0, abs=1e-6)  # its matrices are not used
    assert result.block(1).block_influence > 1e-6
    probed = scan_blocks(model, _batches(), probe_head=True, fit=False, progress=False)
    assert probed.block(2).removal_loss == pytest.approx(0.0, abs=1e-5)  # the probe's dense loss is the model's


def test_block_influence_masks_padding():
    model = tiny_bert(layers=2)
    batches = _batches(n=1)
    full = scan_blocks(model, batches, measure=("influence",), fit=False, progress=False)
    junk = [{**b, "input_ids": b["input_ids"].clone()} for b in batches]
    junk[0]["input_ids"][0, -2:] = 7  # change only masked tokens: their hidden states differ, BI must not
    masked = scan_blocks(model, junk, measure=("influence",), fit=False, progress=False)
    assert masked.block(1).block_influence == pytest.approx(full.block(1).block_influence, rel=1e-9)


def test_scan_losses_equal_converted_and_dropped_models():
    model = tiny_bert(layers=3)
    batches = _batches()
    result = scan_blocks(model, batches, seed=5, progress=False)
    base = _loss(model, batches)
    assert result.base_loss == pytest.approx(base, rel=1e-6)
    for b in (1, 3):
        gaussian = get_isogauss_model(copy.deepcopy(model), IsoGaussConfig(layers=[b], noise="seeded", seed=5)).eval()
        assert result.block(b).replacement_loss == pytest.approx(_loss(gaussian, batches) - base, abs=1e-5)
        removed = copy.deepcopy(model)
        del removed.bert.encoder.layer[b - 1]
        assert result.block(b).removal_loss == pytest.approx(_loss(removed, batches) - base, abs=1e-5)


def test_removal_matches_baselines_drop_blocks():
    baselines = pytest.importorskip("isogauss_hf.baselines")
    drop_blocks = getattr(baselines, "drop_blocks", None)
    if drop_blocks is None:
        pytest.skip("isogauss_hf.baselines.drop_blocks not available")
    model = tiny_bert(layers=3)
    batches = _batches()
    result = scan_blocks(model, batches, measure=("removal",), fit=False, progress=False)
    dropped = drop_blocks(copy.deepcopy(model), [2])
    assert result.block(2).removal_loss == pytest.approx(_loss(dropped, batches) - result.base_loss, abs=1e-5)


def test_scan_costs_blocks_plus_one_passes_and_restores_the_model():
    model = tiny_bert(layers=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [id(m) for m in model.modules()]
    model.train()
    result = scan_blocks(model, _batches(), probe_head=True, progress=False)
    assert result.meta["dense_pass_equivalents"] == 4.0  # blocks + 1
    assert result.meta["model_calls"] == 3 * (1 + 2 * 3)
    assert result.meta["head"].startswith("probe")
    assert model.training and [id(m) for m in model.modules()] == modules
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_head_probe_lowers_the_dense_loss():
    model = tiny_bert(layers=2)
    batches = _batches(n=4, bs=8)
    kept = scan_blocks(model, batches, measure=("influence",), fit=False, progress=False)
    probed = scan_blocks(model, batches, measure=("influence",), fit=False, probe_head=True, progress=False)
    assert probed.base_loss < 0.8 * kept.base_loss


def test_make_calibration_batches_is_seeded_and_drops_unused_columns():
    rows = [{"input_ids": list(range(2, 2 + (i % 5) + 1)), "label": i % 3, "text": "x"} for i in range(20)]

    def collate(items):
        width = max(len(r["input_ids"]) for r in items)
        return {"input_ids": torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in items]),
                "labels": torch.tensor([r["label"] for r in items]), "keys": sorted(items[0])}

    a = make_calibration_batches(rows, collate, num_samples=10, batch_size=4, seed=3, model=tiny_bert())
    b = make_calibration_batches(rows, collate, num_samples=10, batch_size=4, seed=3, model=tiny_bert())
    assert [len(x["labels"]) for x in a] == [4, 4, 2]
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    assert a[0]["keys"] == ["input_ids", "label"]  # "text" is not a forward argument


# ------------------------------------------------------------------------------------------ selection
def _fake_scan(values: dict[int, float], key: str = "replacement_loss") -> ScanResult:
    rows = []
    for b, v in values.items():
        row = BlockScan(b, fit={"ks": 0.0, "stable_rank": 0.0})
        if key in ("replacement_loss", "removal_loss", "block_influence"):
            setattr(row, key, v)
        else:
            row.fit[key] = v
        rows.append(row)
    return ScanResult(len(values), 1.0, rows, [], {})


@pytest.mark.parametrize("k", [1, 2, 3])
def test_auto_k_picks_the_k_best_scores(k):
    values = {1: 0.30, 2: 0.05, 3: 0.90, 4: -0.01, 5: 0.20, 6: 0.07}
    pick = suggest_layers(None, None, k, "replacement_loss", scan=_fake_scan(values))
    assert pick.blocks == sorted(sorted(values, key=values.get)[:k])
    assert pick.ranking == sorted(values, key=values.get) and pick.scores == values
    high = suggest_layers(None, None, k, "stable_rank", scan=_fake_scan(values, "stable_rank"))
    assert high.blocks == sorted(sorted(values, key=values.get, reverse=True)[:k])  # higher is safer
    assert pick.to_dict()["scores"]["4"] == -0.01 and "picked" in pick.describe()


def test_suggest_layers_end_to_end_and_bad_k():
    model = tiny_bert(layers=3)
    batches = _batches()
    pick = suggest_layers(model, batches, 2, progress=False)  # the default score; probes the head by default
    assert pick.score == "removal_loss"
    scan = scan_blocks(model, batches, measure=("removal",), probe_head=True, progress=False)
    expected = sorted(sorted((r.block for r in scan.blocks), key=lambda b: scan.block(b).removal_loss)[:2])
    assert pick.blocks == expected
    by_replacement = suggest_layers(model, batches, 2, "replacement_loss", progress=False)
    scan = scan_blocks(model, batches, measure=("replacement",), probe_head=True, progress=False)
    expected = sorted(sorted((r.block for r in scan.blocks), key=lambda b: scan.block(b).replacement_loss)[:2])
    assert by_replacement.blocks == expected
    fit_pick = suggest_layers(model, None, 1, "ks", progress=False)  # a fit score needs no data
    assert len(fit_pick.blocks) == 1
    with pytest.raises(UsageError, match="4 blocks.*3"):
        suggest_layers(model, batches, 4, progress=False)
    with pytest.raises(UsageError, match="needs calibration batches"):
        suggest_layers(model, None, 1, "removal_loss")
    with pytest.raises(UsageError, match="choose one of"):
        suggest_layers(model, batches, 1, "nope")
    assert set(SCORES) >= {"replacement_loss", "removal_loss", "block_influence", "ks", "wasserstein"}


def test_parse_auto_layers():
    assert parse_auto_layers("auto:3") == 3 and parse_auto_layers("AUTO:1") == 1
    assert parse_auto_layers("2,4") is None and parse_auto_layers(None) is None
    for bad in ("auto", "auto:0", "auto:x"):
        with pytest.raises(UsageError, match="auto:K"):
            parse_auto_layers(bad)


# ------------------------------------------------------------------------------------------ drift, report
def test_weight_drift_measures_a_known_shift():
    before = tiny_bert(layers=2)
    after = copy.deepcopy(before)
    with torch.no_grad():
        after.bert.encoder.layer[1].output.dense.weight.add_(0.01)
    rows = {r["name"]: r for r in weight_drift(before, after)}
    moved = rows["bert.encoder.layer.1.output.dense"]
    assert moved["wasserstein"] == pytest.approx(0.01, rel=1e-4) and moved["frobenius_change"] > 0
    still = rows["bert.encoder.layer.0.output.dense"]
    assert still["wasserstein"] == 0.0 and still["before_ks"] == still["after_ks"]
    gpt = tiny_gpt2()
    assert all(r["wasserstein"] == 0 for r in weight_drift(gpt, copy.deepcopy(gpt), layers=[2]))
    gaussian = get_isogauss_model(copy.deepcopy(before), IsoGaussConfig(layers=[1], noise="seeded"))
    rows = {r["name"]: r for r in weight_drift(before, gaussian)}  # a Gaussian layer counts by its seeded draw
    assert rows["bert.encoder.layer.0.attention.self.query"]["wasserstein"] > 0
    assert rows["bert.encoder.layer.1.attention.self.query"]["wasserstein"] == 0


def test_write_report_files(tmp_path):
    model = tiny_bert(layers=2)
    result = scan_blocks(model, _batches(), progress=False)
    paths = write_report(result, str(tmp_path), "replacement_loss", context={"model": "tiny"})
    for key in ("markdown", "json", "heatmap", "sensitivity", "std_by_depth"):
        assert (tmp_path / paths[key].split("/")[-1]).stat().st_size > 0
    text = (tmp_path / "analysis.md").read_text()
    assert "d-loss Gaussian" in text and "bert.encoder.layer.1.output.dense" in text
    restored = ScanResult.from_dict(__import__("json").loads((tmp_path / "analysis.json").read_text()))
    assert restored.block(2).replacement_loss == pytest.approx(result.block(2).replacement_loss)
    assert not math.isnan(restored.matrices[0].metrics["ks"])
