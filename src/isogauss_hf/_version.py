"""The installed version of isogauss-hf, read from the package metadata (``pyproject.toml``)."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("isogauss-hf")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
