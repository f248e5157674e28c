"""``first_line``: how every loader and command tells an error in one line."""

from iaakd.errors import first_line


def test_an_error_without_a_message_is_told_by_its_type_not_an_index_error():
    assert first_line(RuntimeError()) == "RuntimeError"
    assert first_line(ValueError("  \n ")) == "ValueError"


def test_only_the_first_line_is_kept_and_cut_at_the_limit():
    error = RuntimeError("\n  size mismatch for conv_stem.weight: copying a param\n  more detail")
    assert first_line(error) == "size mismatch for conv_stem.weight: copying a param"
    assert first_line(error, 13) == "size mismatch"
