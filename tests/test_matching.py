"""Matching by nearest training image (Table IV)."""

import numpy as np

from iaakd.matching import nearest_neighbours


def test_nearest_by_cosine_not_by_length_and_across_chunks():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [10.0, 9.0], [-1.0, 0.0]], dtype=np.float32)
    test = np.array([[5.0, 0.1], [0.1, 3.0], [1.0, 1.0], [-2.0, 0.0]], dtype=np.float32)
    # [1, 1] points between rows 0 and 1 but is nearly parallel to [10, 9]: cosine picks row 2
    expected = [0, 1, 2, 3]
    assert nearest_neighbours(train, test).tolist() == expected
    assert nearest_neighbours(train, test, chunk_rows=1).tolist() == expected  # chunking changes nothing


def test_matching_a_copy_of_the_training_set_finds_each_image_itself():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 16)).astype(np.float32)
    order = rng.permutation(50)
    assert (nearest_neighbours(train, 3 * train[order], chunk_rows=7) == order).all()
