"""Score your own photos with a trained student: ``iaakd-score models/student.pt photo.jpg folder/ ...``.

Prints CSV (path, mean score, the 10-bin distribution) to stdout or to ``--out``. The checkpoint holds
everything needed (architecture, input size, resize filter, normalisation); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from pathlib import Path

from iaakd.data.ava import inspect_image
from iaakd.errors import UserError
from iaakd.metrics import mean_score
from iaakd.student import load_student, predict

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def collect(inputs: list[str]) -> list[Path]:
    paths = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            paths.append(path)
        else:
            raise UserError(f"not a file or folder: {item}")
    for path in paths:
        found = inspect_image(path)
        if isinstance(found, str):
            raise UserError(f"{path}: {found}")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="iaakd-score", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a student checkpoint (models/student.pt)")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--out", type=Path, help="write the CSV here instead of stdout")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    try:
        model, preprocess, _ = load_student(Path(args.model))
        paths = collect(args.images)
        distribution = predict(
            model, [str(p) for p in paths], preprocess, batch_size=args.batch_size, progress=len(paths) > 64
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    with contextlib.ExitStack() as stack:
        handle = (
            stack.enter_context(open(args.out, "w", newline="", encoding="utf-8")) if args.out else sys.stdout
        )
        writer = csv.writer(handle)
        writer.writerow(["path", "mean_score", *[f"p{k}" for k in range(1, 11)]])
        for path, score, row in zip(paths, mean_score(distribution), distribution, strict=True):
            writer.writerow([str(path), f"{score:.4f}", *[f"{p:.5f}" for p in row]])


if __name__ == "__main__":
    main()
