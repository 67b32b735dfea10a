"""The package layout the README promises: no module over ~350 lines, no import cycle, no import of
``__version__`` back from the package root (``scripts/check_layout.py``)."""

import os
import sys
import textwrap

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import check_layout  # noqa: E402


def test_package_layout_holds():
    r = check_layout.report()
    assert r["modules"] > 50
    assert r["over_limit"] == []
    assert r["cycles"] == []
    assert r["version_from_root"] == []


def _write(root, files):
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(textwrap.dedent(text))


@pytest.mark.parametrize("files, key, expected", [
    ({"isogauss_hf/__init__.py": "from .a import x\n", "isogauss_hf/a.py": "from .b import y\nx = 1\n",
      "isogauss_hf/b.py": "def f():\n    from .a import x\ny = 2\n"},
     "cycles", [["isogauss_hf.a", "isogauss_hf.b"]]),
    ({"isogauss_hf/__init__.py": "__version__ = '0'\n", "isogauss_hf/a.py": "from . import __version__\n"},
     "version_from_root", ["isogauss_hf.a"]),
    ({"isogauss_hf/__init__.py": "", "isogauss_hf/big.py": "x = 1\n" * 12},
     "over_limit", [(12, "isogauss_hf.big")]),
])
def test_check_finds_each_violation(tmp_path, files, key, expected):
    _write(tmp_path, files)
    r = check_layout.report(str(tmp_path / "isogauss_hf"), max_lines=10)
    assert r[key] == expected
