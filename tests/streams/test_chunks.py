"""Table values larger than a changelog message are written in chunks and joined again."""

from __future__ import annotations

from tracebus.streams.chunks import chunk_keys, chunk_partition, chunked, joined

KEY = b"0123456789abcdef0123456789abcdef"


def test_a_value_that_fits_is_written_as_it_is() -> None:
    assert chunked(KEY, b"x" * 100, 100, 3, 7) == [(KEY, b"x" * 100)]


def test_a_larger_value_is_written_as_chunks_that_fit_then_a_header_naming_them() -> None:
    value = bytes(range(256)) * 10
    entries = chunked(KEY, value, 1000, 3, 7)
    *chunks, (key, header) = entries
    assert key == KEY
    assert [len(v) for _, v in chunks] == [1000, 1000, 560]
    assert chunk_keys(header) == [k for k, _ in chunks]
    assert all(k.startswith(KEY + b"/chunk/") and chunk_partition(k) == 3 for k, _ in chunks)
    assert joined(entries).entries == [(KEY, value)]


def test_joining_keeps_plain_entries_and_records_which_chunks_each_value_has() -> None:
    chunked_entries = chunked(KEY + b"/snapshot", b"s" * 50, 20, 0, 1)
    table = joined([(KEY, b"{}"), *chunked_entries])
    assert table.entries == [(KEY, b"{}"), (KEY + b"/snapshot", b"s" * 50)]
    assert table.chunks == {KEY + b"/snapshot": [k for k, _ in chunked_entries[:-1]]}
    assert table.orphans == table.broken == []


def test_chunks_no_header_names_are_orphans_to_delete() -> None:
    old, new = chunked(KEY, b"a" * 50, 20, 0, 1), chunked(KEY, b"b" * 50, 20, 0, 2)
    # The worker stopped after writing the new chunks, before the new header.
    table = joined([*old, *new[:-1]])
    assert table.entries == [(KEY, b"a" * 50)]
    assert table.orphans == [k for k, _ in new[:-1]]


def test_a_header_whose_chunks_are_missing_is_left_out_and_reported() -> None:
    *chunks, header = chunked(KEY, b"a" * 50, 20, 0, 1)
    table = joined([chunks[0], header])
    assert table.entries == []
    assert table.broken == [KEY]
