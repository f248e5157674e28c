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
    assert not list(work.glob("*.partial"))  # a failed build leaves nothing half-written
