"""Where recipes are found: ``$ISOGAUSS_RECIPES_DIR``, the copy shipped in the wheel, or a source checkout.

:func:`recipes_dir`, :func:`list_recipes` and :func:`find_recipe` (re-exported by :mod:`isogauss_hf.recipes`,
which loads and validates what they find).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from .errors import RecipeError

__all__ = ["RECIPES_ENV", "PACKAGED_RECIPES", "recipes_dir", "list_recipes", "find_recipe"]

RECIPES_ENV = "ISOGAUSS_RECIPES_DIR"
#: Directory, inside the installed package, of the recipes shipped in the wheel (copied from recipes/).
PACKAGED_RECIPES = ("data", "recipes")


def _packaged_recipes_dir() -> Optional[Path]:
    try:
        from importlib.resources import files

        path = Path(str(files("isogauss_hf").joinpath(*PACKAGED_RECIPES)))
    except (ImportError, ModuleNotFoundError, TypeError):  # pragma: no cover - unusual importers
        return None
    return path if path.is_dir() else None


def recipes_dir() -> Path:
    """Directory of the recipes: ``$ISOGAUSS_RECIPES_DIR``, else the copy installed with the package
    (``isogauss_hf/data/recipes``), else ``recipes/`` of the source checkout this module runs from."""
    env = os.environ.get(RECIPES_ENV)
    if env:
        return Path(env).expanduser()
    packaged = _packaged_recipes_dir()
    if packaged is not None:
        return packaged
    return Path(__file__).resolve().parent.parent.parent / "recipes"


def list_recipes() -> list[str]:
    """Names of the recipes in :func:`recipes_dir`, sorted."""
    directory = recipes_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml"))


def find_recipe(name_or_path: Union[str, os.PathLike]) -> Path:
    """The YAML file of a recipe name or path; :class:`RecipeError` names the known recipes otherwise."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        if path.is_file():
            return path
        raise RecipeError(f"recipe file {text!r} not found")
    candidate = recipes_dir() / f"{text}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(list_recipes()) or f"none found in {recipes_dir()}"
    raise RecipeError(f"unknown recipe {text!r}; known recipes: {known}")
