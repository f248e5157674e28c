"""Fig. 7: the teacher's spread over training runs. The distiller is trained again with other seeds on
the same features and split (params.yaml's distiller configuration); each run is scored on the test split.

Reads the pipeline's outputs (run `dvc repro` first); writes results/teacher_spread.json;
`python scripts/report.py` puts the table into the README.

    python scripts/teacher_spread.py [--seeds 0 1 2 3 4] [--epochs N] [--out results/teacher_spread.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from experiment import DistillerRuns, Pipeline, write_results

from iaakd.metrics import round_floats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=None, help="override distiller.epochs (smoke tests)")
    parser.add_argument("--out", type=Path, default=Path("results/teacher_spread.json"))
    args = parser.parse_args()

    pipeline = Pipeline.load()
    distillers = DistillerRuns(pipeline, args.epochs)
    runs = []
    for seed in args.seeds:
        print(f"--- distiller, seed {seed}", flush=True)
        metrics = distillers.run(distillers.backbones, seed)
        runs.append({"seed": seed, **{k: v for k, v in metrics.items() if k != "gsf_dim"}})
    srcc = np.array([run["srcc"] for run in runs], dtype=float)
    results = {
        "n_test": int(distillers.masks["test"].sum()),
        "backbones": distillers.backbones,
        "distiller_config": dataclasses.asdict(distillers.base),
        "runs": runs,
        "srcc": {"mean": srcc.mean(), "sd": srcc.std(ddof=1) if len(srcc) > 1 else None,
                 "min": srcc.min(), "max": srcc.max()},
    }  # fmt: skip
    write_results(args.out, results)
    print(json.dumps(round_floats(results["srcc"])))


if __name__ == "__main__":
    main()
