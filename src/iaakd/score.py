"""Score your own photos with a trained student: ``iaakd-score models/student.pt photo.jpg folder/ ...``.

Prints CSV (path, mean score and the 10-bin distribution; or the score; or the probability of "high",
by the model's output type) to stdout or to ``--out``. The checkpoint holds
everything needed (architecture, input size, resize filter, normalisation); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from pathlib import Path

from iaakd.data.scan import scan_images
from iaakd.errors import UserError
from iaakd.student import checkpoint_task, load_student, predict

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
    scans = scan_images([str(path) for path in paths])
    for path, problem in zip(paths, scans["problem"], strict=True):
        if problem is not None:
            raise UserError(f"{path}: {problem}")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="iaakd-score", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a student checkpoint (models/student.pt)")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--out", type=Path, help="write the CSV here instead of stdout")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    try:
        model, preprocess, checkpoint = load_student(Path(args.model))
        task = checkpoint_task(checkpoint)
        paths = collect(args.images)
        output = predict(
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
        if task.output == "binary":
            writer.writerow(["path", "p_high"])
            for path, probability in zip(paths, task.predicted_score(output), strict=True):
                writer.writerow([str(path), f"{probability:.5f}"])
            return
        bins = [f"p{k}" for k in range(1, 11)] if task.output == "distribution" else []
        writer.writerow(["path", "mean_score", *bins])
        for path, score, row in zip(paths, task.predicted_score(output), output, strict=True):
            writer.writerow([str(path), f"{score:.4f}", *([f"{p:.5f}" for p in row] if bins else [])])


if __name__ == "__main__":
    main()
