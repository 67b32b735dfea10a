"""The convolution pipeline check (issue 12), several seeds: the offline recipe ``resnet-tiny-fashion-mnist``
(a from-scratch ResNet with ResNet-18's module numbering on Fashion-MNIST, Gaussian convolution module 9)
run through ``isogauss-finetune`` with the baselines beside it, once per seed and configuration:

* ``paper``: the recipe as written (``--preset paper``: WDU, resample) with ``--baselines drop,lowrank,frozen``;
* ``default``: ``--preset default --rule gdu --noise seeded --calibrate-steps 200`` with ``--baselines drop,lowrank``.

Each CLI run writes ``runs/cnn-offline/CONFIG-seedS/results.json``; this script collects them into
``results/cnn_offline.{json,md}`` (mean ± std over seeds of test accuracy, the Wilson interval of one run).

    python scripts/reproduce_cnn_offline.py --seeds 0 1 2
    python scripts/reproduce_cnn_offline.py --report-only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _repro_common as C  # noqa: E402

RECIPE = "resnet-tiny-fashion-mnist"
CONFIGS = {
    "paper": ["--preset", "paper", "--baselines", "drop,lowrank,frozen"],
    "default": ["--preset", "default", "--rule", "gdu", "--noise", "seeded", "--calibrate-steps", "200",
                "--baselines", "drop,lowrank"],
}
RUN_ORDER = ["dense", "isogauss", "drop", "lowrank", "frozen"]


def cli() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "isogauss-finetune")
    return exe if os.path.exists(exe) else "isogauss-finetune"


def markdown(payload: dict) -> str:
    lines = ["# Convolution pipeline check: tiny ResNet (ResNet-18 numbering) on Fashion-MNIST, module 9 Gaussian\n",
             f"Command: `{payload['command']}` (each run: `isogauss-finetune --recipe {RECIPE} --seed S "
             "--output-dir runs/cnn-offline/CONFIG-seedS --overwrite` plus the configuration's flags below).\n",
             "A small from-scratch network (widths 16-128), 6,000 train / 1,000 test images, 1 epoch: a pipeline "
             "check of the convolution layer, not a reproduction of the paper's Tables 5-6. Test accuracy (%), "
             "mean ± std over seeds; the last column is one run's 95 % Wilson half-width.\n"]
    for name, flags in CONFIGS.items():
        runs = payload["runs"].get(name, {})
        if not runs:
            continue
        seeds = sorted(runs, key=int)
        lines.append(f"\n## {name}: `{' '.join(flags)}`\n")
        rows = []
        for run in RUN_ORDER:
            recs = [runs[s][run] for s in seeds if run in runs[s]]
            if not recs:
                continue
            accs = [r["accuracy"] for r in recs]
            half = max(100 * (r["high"] - r["low"]) / 2 for r in recs)
            label = run if run != "isogauss" else f"Gaussian ({recs[0]['rule']}/{recs[0]['noise']})"
            rows.append([label, C.fmt_pct(accs), len(accs), f"{recs[0]['kept']:,}", f"±{half:.1f}"])
        lines.append(C.md_table(["run", "accuracy", "seeds", "parameters kept (module 9)", "95 % half-width"], rows))
        maj = {round(100 * runs[s]["dense"]["majority_rate"], 2) for s in seeds if "dense" in runs[s]}
        lines.append(f"\nMajority-class rate {', '.join(f'{m:.2f}' for m in sorted(maj))} %; seeds {', '.join(seeds)}.\n")
    lines.append(f"\nLoad average (1 min) during the runs: {payload.get('load', 'n/a')}; updated {payload.get('updated')}.\n")
    return "\n".join(lines)


def collect(path: str) -> dict:
    res = C.load_json(path) or {}
    out = {}
    for r in res.get("runs", []):
        acc = r.get("accuracy_summary") or {}
        cfg = r.get("isogauss_config") or {}
        out[r["name"]] = {"accuracy": acc.get("accuracy"), "low": acc.get("low"), "high": acc.get("high"),
                          "majority_rate": r.get("majority_rate"), "rule": cfg.get("rule"), "noise": cfg.get("noise"),
                          "kept": (r.get("parameter_report") or {}).get("gaussian_parameters", 0),
                          "train_time_s": r.get("train_time_s"), "eval_time_s": r.get("eval_time_s")}
    return out


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--runs-dir", default=os.path.join(C.REPO_ROOT, "runs", "cnn-offline"))
    p.add_argument("--out", default=os.path.join(C.RESULTS_DIR, "cnn_offline"))
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    payload = C.load_json(args.out + ".json") or {"runs": {}}
    payload["command"] = "python scripts/reproduce_cnn_offline.py " + " ".join(argv if argv is not None else sys.argv[1:])
    loads = []
    for name in args.configs:
        for seed in args.seeds:
            run_dir = os.path.join(args.runs_dir, f"{name}-seed{seed}")
            if not args.report_only and str(seed) not in payload["runs"].get(name, {}):
                loads.append(os.getloadavg()[0])
                cmd = [cli(), "--recipe", RECIPE, "--seed", str(seed), "--output-dir", run_dir, "--overwrite",
                       *CONFIGS[name]]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
                print(f"[{C.utc_now()}] {name} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
            found = collect(os.path.join(run_dir, "results.json"))
            if found:
                payload["runs"].setdefault(name, {})[str(seed)] = found
    if loads:
        payload["load"] = f"{min(loads):.1f}-{max(loads):.1f}"
    payload["updated"] = C.utc_now()
    payload["environment"] = C.environment()
    C.write_json(args.out + ".json", payload)
    C.write_text(args.out + ".md", markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
