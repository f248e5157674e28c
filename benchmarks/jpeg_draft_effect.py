"""What JPEG draft decoding (``iaakd score --jpeg-draft``) does to the scores of real photos, for a model
trained on full decodes: the AVA sample's photos scored twice by the same student, with and without draft
decoding, and the two compared (how far the scores move, against how far they spread; whether the order
stays). Draft decoding lets libjpeg decode at 1/2..1/8 scale (still >= the input size) before the resize.

    PYTHONPATH=src python benchmarks/jpeg_draft_effect.py models/student.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from iaakd import Scorer

AVA_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "ava-sample" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="a student trained without draft decoding")
    parser.add_argument("--photos", type=Path, default=AVA_SAMPLE)
    args = parser.parse_args()
    photos = sorted(str(path) for path in args.photos.glob("*.jpg"))
    full, draft = (
        Scorer.load(args.model, "cpu", warn=False, backend="torch", jpeg_draft=flag).score(photos)
        for flag in (False, True)
    )
    assert (full["error"] == "").all() and (draft["error"] == "").all()
    a, b = full["mean_score"].to_numpy(), draft["mean_score"].to_numpy()
    moved = np.abs(b - a)
    print(json.dumps({
        "model": args.model,
        "photos": len(photos),
        "score_sd_full_decode": round(float(a.std(ddof=1)), 4),
        "mean_abs_change": round(float(moved.mean()), 4),
        "max_abs_change": round(float(moved.max()), 4),
        "change_over_sd": round(float(moved.mean() / a.std(ddof=1)), 3),
        "srcc_full_vs_draft": round(float(stats.spearmanr(a, b).statistic), 4),
        "plcc_full_vs_draft": round(float(stats.pearsonr(a, b).statistic), 4),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
