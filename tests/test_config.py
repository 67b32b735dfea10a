"""IsoGaussConfig validation and JSON round trip."""

import json

import pytest

from isogauss_hf.config import CONFIG_NAME, FORMAT_VERSION, IsoGaussConfig


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layers=[0, 1]), r"layers \[0\] invalid: block indices are 1-based"),
        (dict(layers=[2, 2, 3]), r"block\(s\) \[2\] more than once"),
        (dict(layers=[]), "layers is empty"),
        (dict(layers=3), "layers must be a list"),
        (dict(layers=["4"]), "layers must be integers"),
        (dict(rule="gdw"), "rule='gdw' is not valid; choose one of 'gdu', 'wdu', 'backprop', 'frozen'. Did you mean"),
        (dict(noise="random"), "noise='random' is not valid; choose one of 'resample', 'seeded'"),
        (dict(num_samples=0), "num_samples must be an integer >= 1, got 0"),
        (dict(num_samples=-3), "num_samples must be an integer >= 1"),
        (dict(num_samples=2.5), "num_samples must be an integer"),
        (dict(seed=-1), "seed must be a non-negative integer"),
        (dict(target_modules=[]), "target_modules is empty"),
        (dict(distribution_lr=0.0), "distribution_lr must be a positive number"),
        (dict(standardize="yes"), "standardize must be true or false"),
        (dict(std_floor=-1.0), "std_floor must be a number >= 0"),
    ],
)
def test_invalid_values_raise_one_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IsoGaussConfig(**kwargs)


def test_defaults_and_normalization():
    c = IsoGaussConfig(layers=(4, 8, 12), target_modules="query")
    assert c.layers == [4, 8, 12] and c.target_modules == ["query"]
    from isogauss_hf import settings

    assert (c.rule, c.noise, c.num_samples, c.standardize, c.distribution_lr) == (
        settings.DEFAULT_RULE, settings.DEFAULT_NOISE, settings.DEFAULT_NUM_SAMPLES, False, None)


def test_every_field_has_help():
    from dataclasses import fields

    for f in fields(IsoGaussConfig):
        assert f.metadata.get("help"), f.name


def test_json_round_trip_with_format_version(tmp_path):
    c = IsoGaussConfig(layers=[1, 3], rule="gdu", noise="seeded", seed=7, num_samples=10, distribution_lr=1e-3)
    c.save_pretrained(tmp_path, extra={"note": "x"})
    data = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert data["format_version"] == FORMAT_VERSION and data["note"] == "x"
    again, meta = IsoGaussConfig.load_with_metadata(str(tmp_path))
    assert again == c and meta == {"note": "x"}


def test_newer_format_version_is_refused(tmp_path):
    data = IsoGaussConfig(layers=[1]).to_dict()
    data["format_version"] = FORMAT_VERSION + 1
    (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"format_version {FORMAT_VERSION + 1}.*supports up to {FORMAT_VERSION}"):
        IsoGaussConfig.from_pretrained(str(tmp_path))


def test_unknown_field_is_refused():
    with pytest.raises(ValueError, match=r"unknown IsoGaussConfig field\(s\) \['layer'\]"):
        IsoGaussConfig.from_dict({"layer": [1]})


def test_missing_file_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="no isogauss_config.json"):
        IsoGaussConfig.from_pretrained(str(tmp_path))
