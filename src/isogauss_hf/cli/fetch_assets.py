"""``isogauss-fetch-assets`` (or ``python -m isogauss_hf.cli.fetch_assets``): install the offline assets.

Runs the bundled ``fetch_offline_assets.sh`` (shipped in the wheel as
``isogauss_hf/data/fetch_offline_assets.sh``; ``scripts/fetch_offline_assets.sh`` in a source checkout)
with ``bash``, for the Python interpreter running this command (``--python`` is passed unless given).
Every other argument goes to the script (``--skip-apt``, ``--help``). This is the command that every
missing-asset message names (:data:`isogauss_hf.tasks.assets.FETCH_COMMAND`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["COMMAND", "script_path", "main"]

COMMAND = "isogauss-fetch-assets"
_NAME = "fetch_offline_assets.sh"


def script_path() -> Optional[Path]:
    """The installer script: the copy inside the installed package, else the source checkout's; None if neither."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "data" / _NAME, package.parent.parent / "scripts" / _NAME):
        if candidate.is_file():
            return candidate
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    script = script_path()
    if script is None:
        print(f"{COMMAND}: error: {_NAME} is not installed with this isogauss-hf (reinstall the package)",
              file=sys.stderr)
        return 2
    bash = shutil.which("bash")
    if bash is None:
        print(f"{COMMAND}: error: bash is needed to run {script}", file=sys.stderr)
        return 2
    if not any(a == "--python" or a.startswith("--python=") for a in args):
        args = ["--python", sys.executable] + args
    return subprocess.call([bash, str(script)] + args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
