"""``iaakd score MODEL PATH...``: score files, folders and @lists with a trained student, as CSV or JSON lines.

MODEL is a checkpoint (``models/student.pt``), a folder written by ``iaakd export --hub-folder``, or
``hf://ORG/NAME[@REVISION]`` on the Hugging Face Hub. On a CPU the forward pass runs in ONNX Runtime when it
is installed (``--backend``). Rows are written as the batches finish, in the order of the sorted path list;
a file that cannot be decoded is a row whose ``error`` says why. Beside ``--out FILE``, ``FILE.json``
records the model (its SHA-256; from the Hub, the commit and each file's SHA-256), its preprocessing and
the package version, so that ``--resume`` never mixes two models' scores in one file. ``--html DIR``
writes a page of the scored photos, best first (:mod:`iaakd.page`).
Exit status: 0 every file scored, 2 some failed (``--strict``: stopped at the first), 1 bad usage or model.
``iaakd-score`` and ``python -m iaakd score`` are this same command.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tqdm import tqdm

from iaakd.command import at_least, output_file, output_folder
from iaakd.errors import UserError
from iaakd.page import THUMBNAIL_SIZE, Page
from iaakd.runtime import BACKENDS

EXIT_OK, EXIT_USAGE, EXIT_FAILED = 0, 1, 2
PROGRESS_FROM = 64  # images: a progress bar on stderr from this many on (when stderr is a terminal)
FAILURES_LISTED = 10  # failed files named in the summary; the rest are in the error column
DECIMALS = {"mean_score": 4}  # p_high and p1..p10: 5
# A file name that is not valid UTF-8 is written (CSV) and read back (--resume) as its own bytes, so the row
# names the very file and a resumed run recognises it; JSON lines escape it (\udcXX) and read it back too.
PATH_BYTES = "surrogateescape"


def decimals(column: str) -> int:
    return DECIMALS.get(column, 5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="models/student.pt, a folder from iaakd export --hub-folder, or hf://ORG/NAME[@REVISION]",
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="image files, folders (recursive), @list.txt"
    )
    parser.add_argument("--out", type=Path, help="write here (and FILE.json beside it) instead of stdout")
    parser.add_argument("--format", choices=["csv", "jsonl"], help="default: by --out's suffix, else csv")
    parser.add_argument("--html", type=Path, metavar="DIR", help="also a page of the scored photos in DIR")
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="auto: ONNX Runtime on a CPU when installed (its export cached), else torch (default: $IAAKD_BACKEND, else auto)",
    )
    parser.add_argument(
        "--jpeg-draft",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode JPEGs at 1/2..1/8 scale, still >= the input size (default: as the model was trained)",
    )
    parser.add_argument("--batch-size", type=at_least(1), default=32, help="images per forward pass")
    parser.add_argument(
        "--num-workers",
        type=at_least(0),
        default=None,
        help="loader processes that decode (default: cores - 1, <= 8)",
    )
    parser.add_argument("--resume", action="store_true", help="skip the paths already in --out")
    parser.add_argument("--strict", action="store_true", help="stop at the first file that fails (status 2)")
    parser.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="score only the K-th (from 0) of N blocks of the sorted paths",
    )


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r} is not K/N (for example 0/4)") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard {text}: need N >= 1 and 0 <= K < N (K counts from 0)")
    return index, count


def shard_block(paths: list[str], shard: tuple[int, int] | None) -> list[str]:
    """The K-th of N contiguous blocks (sizes differ by at most one): concatenated in K order, all paths."""
    if shard is None:
        return paths
    index, count = shard
    return paths[index * len(paths) // count : (index + 1) * len(paths) // count]


class RowWriter:
    """Formats rows as CSV or JSON lines with the printed precision; the header is written by ``header``."""

    def __init__(self, handle: IO[str], columns: list[str], kind: str) -> None:
        self.handle, self.columns, self.kind = handle, columns, kind
        self.csv = csv.writer(handle, lineterminator="\n") if kind == "csv" else None

    def header(self) -> None:
        if self.csv is not None:
            self.csv.writerow(self.columns)

    def row(self, path: str, values: Sequence[float], error: str) -> None:
        value_columns = self.columns[1:-1]
        if self.csv is not None:
            cells = [
                "" if error else f"{value:.{decimals(name)}f}"
                for name, value in zip(value_columns, values, strict=True)
            ]
            self.csv.writerow([path, *cells, error])
            return
        record = {"path": path}
        for name, value in zip(value_columns, values, strict=True):
            record[name] = None if error else round(float(value), decimals(name))
        record["error"] = error
        self.handle.write(json.dumps(record) + "\n")


@dataclass
class Existing:
    """What an earlier run left in the output: its paths, and how many of its rows are errors."""

    paths: set[str] = field(default_factory=set)
    failed: int = 0
    rows: list[tuple[str, float | None, str]] = field(default_factory=list)  # path, score, error


def read_existing(out: Path, kind: str, columns: list[str]) -> Existing:
    """The rows already in ``out``; a half-written last line (no newline) is cut off the file."""
    content = out.read_bytes()
    if content and not content.endswith(b"\n"):
        content = content[: content.rfind(b"\n") + 1]
        with open(out, "r+b") as handle:
            handle.truncate(len(content))
    text = content.decode("utf-8", errors=PATH_BYTES)
    existing = Existing()
    if kind == "csv":
        rows = list(csv.reader(io.StringIO(text)))
        if rows and rows[0] != columns:
            raise UserError(
                f"{out}: its columns {rows[0]} are not this model's {columns}; write to another file"
            )
        body = rows[1:]
        records = [(row[0], _number(row[1]), row[-1]) for row in body if row]
    else:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                record = json.loads(line)
                records.append((record["path"], record.get(columns[1]), record.get("error") or ""))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(
                    f"{out}:{number}: not a row this command wrote; write to another file"
                ) from None
    for path, score, error in records:
        existing.paths.add(path)
        existing.failed += bool(error)
        existing.rows.append((path, score, error))
    return existing


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def check_same_model(out: Path, record_file: Path, record: dict) -> None:
    """Refuses to resume ``out`` unless its record names the same model file content, format and shard."""
    if not record_file.is_file():
        raise UserError(
            f"--resume: {out} has no {record_file.name} beside it, so which model wrote it is unknown; "
            "write to another file"
        )
    try:
        earlier = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"--resume: cannot read {record_file}: {error}") from None
    if earlier.get("model_sha256") != record["model_sha256"]:
        raise UserError(
            f"--resume: {out} was written by another model (SHA-256 {str(earlier.get('model_sha256'))[:12]}..., "
            f"this one is {record['model_sha256'][:12]}...); write to another file"
        )
    for key in ("format", "shard", "preprocess"):
        if earlier.get(key) != record[key]:
            raise UserError(f"--resume: {out} was written with {key} {earlier.get(key)}, not {record[key]}")


def write_record(record_file: Path, record: dict) -> None:
    staging = record_file.with_name(record_file.name + ".partial")
    staging.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    staging.replace(record_file)


@dataclass
class Tally:
    scored: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    stopped: bool = False


def score_into(
    scorer, todo: list[str], writer: RowWriter, args: argparse.Namespace, page: Page | None = None
) -> Tally:
    """Scores ``todo`` batch by batch, writing and flushing each batch's rows (and adding them to ``page``
    with their thumbnails); ``--strict`` stops at a failure."""
    tally = Tally()
    workers = args.num_workers if args.num_workers is not None else default_workers_for(len(todo))
    thumbnail = THUMBNAIL_SIZE if page is not None else None
    show = None if len(todo) >= PROGRESS_FROM else True  # None: tqdm shows it only on a terminal
    with tqdm(total=len(todo), desc="score", unit="img", disable=show, file=sys.stderr) as bar:
        for batch in scorer.batches(todo, args.batch_size, workers, thumbnail):
            for index, values, error in zip(batch.indices, batch.values, batch.errors, strict=True):
                writer.row(todo[index], values, error)
                if page is not None:
                    page.add(todo[index], values[0], error, batch.thumbnails.get(index))
                if error:
                    tally.failed.append((todo[index], error))
                    if args.strict:
                        tally.stopped = True
                        break
                else:
                    tally.scored += 1
            writer.handle.flush()
            bar.update(len(batch.indices))
            if tally.stopped:
                break
    return tally


def default_workers_for(count: int) -> int:
    from iaakd.scorer import default_workers

    return 0 if count <= 8 else default_workers()  # a handful of files: no processes to start


def summarise(tally: Tally, total: int, before: Existing, destination: str) -> None:
    failed = len(tally.failed) + before.failed
    parts = [f"scored {tally.scored}, failed {len(tally.failed)}"]
    if before.paths:
        parts.append(f"{len(before.paths)} rows already there ({before.failed} failed)")
    if tally.stopped:
        parts.append("stopped at the first failure (--strict)")
    print(f"iaakd score: {'; '.join(parts)}; {total} paths; rows in {destination}", file=sys.stderr)
    for path, error in tally.failed[:FAILURES_LISTED]:
        print(f"  failed: {path}: {error}", file=sys.stderr)
    if len(tally.failed) > FAILURES_LISTED:
        print(f"  ... and {len(tally.failed) - FAILURES_LISTED} more (see the error column)", file=sys.stderr)
    if failed and not tally.failed:
        print(f"  {failed} failed rows from the earlier run are in the output", file=sys.stderr)


def output_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    return "jsonl" if args.out is not None and args.out.suffix.lower() in (".jsonl", ".ndjson") else "csv"


def open_output(args: argparse.Namespace, scorer, record: dict, stack: contextlib.ExitStack) -> tuple:
    """The row writer (header written unless resuming), and what an earlier run left (``--resume``)."""
    kind = record["format"]
    if args.out is None:
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(errors=PATH_BYTES)
        writer = RowWriter(sys.stdout, scorer.columns, kind)
        writer.header()
        return writer, Existing()
    record_file = args.out.with_name(args.out.name + ".json")
    resuming = args.resume and args.out.is_file()
    before = Existing()
    if resuming:
        check_same_model(args.out, record_file, record)
        before = read_existing(args.out, kind, scorer.columns)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_record(record_file, record)
    mode = "a" if resuming else "w"
    handle = stack.enter_context(open(args.out, mode, newline="", encoding="utf-8", errors=PATH_BYTES))  # noqa: SIM115 - the caller closes it
    writer = RowWriter(handle, scorer.columns, kind)
    if handle.tell() == 0:
        writer.header()
    return writer, before


def run(args: argparse.Namespace) -> int:
    """The command; returns the exit status. Raises UserError for bad usage or a bad model."""
    from iaakd.scorer import DEMO_WARNING, Scorer, collect_paths

    shard = parse_shard(args.shard)
    if args.resume and args.out is None:
        raise UserError("--resume needs --out FILE: there is nothing to resume on stdout")
    if args.out is not None:
        output_file(args.out, "--out")
        output_file(args.out.with_name(args.out.name + ".json"), "--out's record")
    if args.html is not None:
        output_folder(args.html, "--html")
    scorer = Scorer.load(
        args.model, args.device, warn=False, backend=args.backend, jpeg_draft=args.jpeg_draft
    )
    if scorer.trained_on_demo:
        print(f"warning: {args.model}: {DEMO_WARNING}", file=sys.stderr)
    paths = shard_block(collect_paths(args.paths), shard)
    record = {**scorer.describe(), "format": output_format(args), "shard": args.shard, "complete": False}
    with contextlib.ExitStack() as stack:
        writer, before = open_output(args, scorer, record, stack)
        todo = [path for path in paths if path not in before.paths]
        if args.num_workers is None:
            args.num_workers = default_workers_for(len(todo))
        scorer.share_cores(args.num_workers)
        page = open_page(args, scorer, before)
        try:
            tally = score_into(scorer, todo, writer, args, page)
        except KeyboardInterrupt:
            print(
                f"iaakd score: interrupted; rerun with --resume to continue {args.out or ''}", file=sys.stderr
            )
            return 130
    failed = before.failed + len(tally.failed)
    if args.out is not None and not tally.stopped:
        rows = len(before.paths) + len(todo)
        write_record(
            args.out.with_name(args.out.name + ".json"),
            {**record, "complete": True, "rows": rows, "failed": failed},
        )
    summarise(tally, len(paths), before, str(args.out) if args.out else "stdout")
    if page is not None and tally.stopped:
        print(f"iaakd score: no page written in {args.html} (stopped early)", file=sys.stderr)
    elif page is not None:
        missing = (
            f"; {page.missing_thumbnails} earlier rows have no thumbnail" if page.missing_thumbnails else ""
        )
        print(f"iaakd score: the page is {page.write()}{missing}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def open_page(args: argparse.Namespace, scorer, before: Existing) -> Page | None:
    """The page of ``--html``, holding the rows an earlier run left in ``--out`` (``--resume``)."""
    if args.html is None:
        return None
    from iaakd.scorer import DEMO_WARNING

    warning = f"{DEMO_WARNING}." if scorer.trained_on_demo else ""
    page = Page(args.html, scorer.model_path, scorer.score_column, decimals(scorer.score_column), warning)
    for path, score, error in before.rows:
        page.add(path, score, error)
    return page


if __name__ == "__main__":  # the command is `iaakd score`, `iaakd-score` or `python -m iaakd score`
    sys.exit("error: run `python -m iaakd score ...` (or `iaakd score`, `iaakd-score`)")
