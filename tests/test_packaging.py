"""The wheel carries what an installed user needs: recipes, the asset installer, py.typed, the console scripts.

The wheel is built from a copy of the sources (``pip wheel --no-build-isolation``: offline, a few seconds)
and unpacked; the package is then imported from the unpacked wheel, from a directory that has no
``recipes/`` or ``scripts/`` — as after ``pip install``. (CI also installs it into a clean venv:
``.ci/check_wheel``.)
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "recipes", src / "recipes")
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (src / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "fetch_offline_assets.sh", src / "scripts")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(root / "dist"), str(src)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {done.stderr.strip().splitlines()[-1:]}")
    path = next((root / "dist").glob("isogauss_hf-*.whl"))
    unpacked = root / "site"
    with zipfile.ZipFile(path) as zf:
        zf.extractall(unpacked)
    return path, unpacked


def test_wheel_ships_recipes_installer_and_py_typed(wheel):
    path, _ = wheel
    names = set(zipfile.ZipFile(path).namelist())
    bundled = {n.rsplit("/", 1)[1] for n in names if n.startswith("isogauss_hf/data/recipes/")}
    assert bundled == {p.name for p in (REPO / "recipes").glob("*.yaml")} and len(bundled) >= 14
    assert "isogauss_hf/data/fetch_offline_assets.sh" in names
    assert "isogauss_hf/py.typed" in names


def test_wheel_metadata_scripts_and_dependencies(wheel):
    path, _ = wheel
    zf = zipfile.ZipFile(path)
    info = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
    scripts = zf.read(info).decode()
    for line in ("isogauss-finetune = isogauss_hf.cli.finetune:main", "isogauss-analyze = isogauss_hf.cli.analyze:main",
                 "isogauss-fetch-assets = isogauss_hf.cli.fetch_assets:main"):
        assert line in scripts
    meta = email.message_from_bytes(zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))))
    core = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert any(r.startswith("matplotlib") for r in core)


def _run_installed(unpacked: Path, tmp_path: Path, code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(unpacked), "HF_HUB_OFFLINE": "1"}
    env.pop("ISOGAUSS_RECIPES_DIR", None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_recipes_are_found_from_any_directory_after_install(wheel, tmp_path):
    _, unpacked = wheel
    out = _run_installed(unpacked, tmp_path, (
        "import isogauss_hf.recipes as r; print(r.__file__); print(r.recipes_dir()); print(','.join(r.list_recipes()));"
        "print(r.load_recipe('minilm-bbc-news').isogauss_config.rule)"))
    module, directory, names, rule = out.strip().splitlines()
    assert module.startswith(str(unpacked))  # the unpacked wheel, not the checkout
    assert Path(directory) == unpacked / "isogauss_hf" / "data" / "recipes"
    assert "minilm-bbc-news" in names.split(",") and len(names.split(",")) >= 14 and rule in ("gdu", "wdu", "backprop")


def test_asset_installer_is_found_in_the_install(wheel, tmp_path):
    _, unpacked = wheel
    out = _run_installed(unpacked, tmp_path, "from isogauss_hf.cli.fetch_assets import script_path; print(script_path())")
    assert Path(out.strip()) == unpacked / "isogauss_hf" / "data" / "fetch_offline_assets.sh"
