"""Build hook: ship the recipes and the offline-asset installer inside the wheel.

The project metadata lives in pyproject.toml. The top-level ``recipes/*.yaml`` and
``scripts/fetch_offline_assets.sh`` stay the sources; ``build_py`` copies them into the built package
as ``isogauss_hf/data/recipes/*.yaml`` and ``isogauss_hf/data/fetch_offline_assets.sh``, where
``isogauss_hf.recipes.recipes_dir`` and ``isogauss-fetch-assets`` find them after ``pip install``.
A source checkout (editable install) reads the top-level files directly.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = {  # source (relative to the repository) -> destination inside the isogauss_hf package
    "recipes": "data/recipes",
    "scripts/fetch_offline_assets.sh": "data/fetch_offline_assets.sh",
}


class BuildPyWithData(build_py):
    """``build_py`` that also copies :data:`BUNDLED` into the built ``isogauss_hf`` package."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads recipes/ and scripts/ of the checkout
        package = Path(self.build_lib) / "isogauss_hf"
        for source, dest in BUNDLED.items():
            src, dst = ROOT / source, package / dest
            if not src.exists():
                raise FileNotFoundError(f"{src} is missing: the wheel must ship it")
            if src.is_dir():
                shutil.rmtree(dst, ignore_errors=True)
                dst.mkdir(parents=True)
                for path in sorted(src.glob("*.yaml")):
                    shutil.copy2(path, dst / path.name)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildPyWithData})
