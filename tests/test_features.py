import os
import time

import numpy as np
import pyarrow.dataset as ds
import pytest

from iaakd.errors import UserError
from iaakd.feature_rows import RowSubset, build_feature_matrix
from iaakd.features import PartWriter, make_table, read_metadata, read_table, vector_column


def test_parquet_round_trip_keeps_float16_ids_and_metadata(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(7, 33)).astype(np.float16)
    ids = [f"{100 + i}" for i in range(7)]
    writer = PartWriter(tmp_path / "backbone")
    writer.write(
        make_table(
            {"image_id": ids[:4], "feature": features[:4]}, {"backbone": "x.y", "level_dims": [11, 22]}
        )
    )
    writer.write(
        make_table(
            {"image_id": ids[4:], "feature": features[4:]}, {"backbone": "x.y", "level_dims": [11, 22]}
        )
    )
    assert not (tmp_path / "backbone").exists()  # nothing that looks complete before commit
    writer.commit()
    table = ds.dataset(str(tmp_path / "backbone")).to_table()
    feature_type = table.schema.field("feature").type
    assert feature_type.list_size == 33 and str(feature_type.value_type) == "halffloat"
    order = np.argsort(table.column("image_id").to_pylist())
    np.testing.assert_array_equal(vector_column(table, "feature", np.float16)[order], features)
    assert read_metadata(tmp_path / "backbone") == {"backbone": "x.y", "level_dims": [11, 22]}
    # 2 bytes per dimension plus little overhead (random data does not compress)
    size = sum(p.stat().st_size for p in (tmp_path / "backbone").iterdir())
    assert size > 7 * 33 * 2


def test_feature_matrix_joins_on_id_not_row_order_and_reads_rows_in_any_order(tmp_path):
    for name, offset in (("a", 0.0), ("b", 100.0)):
        writer = PartWriter(tmp_path / name)
        ids = ["3", "1", "2"] if name == "a" else ["2", "3", "1"]
        values = np.array([[float(i) + offset] for i in ids], dtype=np.float16)
        writer.write(make_table({"image_id": ids[:2], "feature": values[:2]}, {}))
        writer.write(make_table({"image_id": ids[2:], "feature": values[2:]}, {}))
        writer.commit()
    work = tmp_path / "work"
    matrix, _ = build_feature_matrix([tmp_path / "a", tmp_path / "b"], ["1", "2", "3"], work)
    assert (len(matrix), matrix.dim) == (3, 2)
    np.testing.assert_array_equal(matrix.read([0, 1, 2]), [[1, 101], [2, 102], [3, 103]])
    np.testing.assert_array_equal(matrix.read([2, 0, 2]), [[3, 103], [1, 101], [3, 103]])
    np.testing.assert_array_equal(RowSubset(matrix, matrix.row_of(["3", "1"])).read([1]), [[1, 101]])
    assert matrix.read([0, 1, 2]).dtype == np.float32
    again, _ = build_feature_matrix([tmp_path / "a", tmp_path / "b"], ["1", "2", "3"], work)
    assert again.path == matrix.path and len(list(work.iterdir())) == 1  # reused, not rebuilt
    with pytest.raises(UserError, match=r"no features for 1 images, for example '9'"):
        build_feature_matrix([tmp_path / "a"], ["1", "9"], work)
    with pytest.raises(UserError, match="feature folder not found"):
        build_feature_matrix([tmp_path / "absent"], ["1"], work)
    assert read_table(tmp_path / "a").num_rows == 3
    assert not [path for path in work.iterdir() if ".tmp-" in path.name]  # a failed build leaves no half


def two_column_parts(tmp_path, ids=("1", "2", "3")):
    writer = PartWriter(tmp_path / "a")
    writer.write(
        make_table(
            {"image_id": list(ids), "feature": np.arange(2 * len(ids), dtype=np.float16).reshape(-1, 2)}, {}
        )
    )
    writer.commit()
    return tmp_path / "a"


def test_a_matrix_cut_short_after_it_was_built_is_an_error_naming_the_file_and_row(tmp_path):
    matrix, _ = build_feature_matrix([two_column_parts(tmp_path)], ["1", "2", "3"], tmp_path / "work")
    np.testing.assert_array_equal(matrix.read([0, 2]), [[0, 1], [4, 5]])
    with open(matrix.path, "r+b") as handle:
        handle.truncate(matrix.row_bytes + 2)  # row 0 whole, half of row 1, no row 2
    np.testing.assert_array_equal(matrix.read([0]), [[0, 1]])
    with pytest.raises(
        UserError, match=rf"{matrix.path}: row 1 is cut short: the file is 6 bytes, 12 expected"
    ):
        matrix.read([0, 1, 2])
    with pytest.raises(UserError, match=r"row 2 is cut short"):
        matrix.read([2])


def test_a_rebuild_removes_older_matrices_but_never_another_process_staging_file(tmp_path):
    """Another process may be building the same matrix right now (the ranks of a torchrun): its staging
    file must survive; finished matrices of other inputs, and staging files abandoned for a day, go."""
    work = tmp_path / "work"
    work.mkdir()
    older = work / "features-0123456789abcdef.f2"
    in_use = [
        work / "features-fedcba9876543210.f2.partial",
        work / ".features-fedcba9876543210.f2.tmp-1a2b.f2",
    ]
    abandoned = work / ".features-00000000000000ff.f2.tmp-9c9c.f2"
    other_name = work / "knowledge-0123456789abcdef.f4"
    for path in (older, *in_use, abandoned, other_name):
        path.write_bytes(b"x")
    os.utime(abandoned, (time.time() - 2 * 86400,) * 2)
    matrix, _ = build_feature_matrix([two_column_parts(tmp_path)], ["1", "2", "3"], work)
    assert sorted(path.name for path in work.iterdir()) == sorted(
        [matrix.path.name, *(path.name for path in in_use), other_name.name]
    )
