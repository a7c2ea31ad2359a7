"""Reading an archive for a backfill: which files, which lines, and why a line is refused."""

from __future__ import annotations

from pathlib import Path

from sink_helpers import document

from tracebus.ops.backfill import Scope, archive_files, select


def test_a_directory_contributes_its_jsonl_files_in_name_order(tmp_path: Path) -> None:
    for name in ("traces-2.jsonl", "traces-1.jsonl", "README", "traces-3.jsonl.tmp"):
        (tmp_path / name).write_text("")
    extra = tmp_path / "elsewhere.jsonl"
    assert archive_files([tmp_path, extra]) == [
        tmp_path / "traces-1.jsonl",
        tmp_path / "traces-2.jsonl",
        extra,
    ]


def test_a_document_larger_than_a_kafka_message_is_refused_with_its_size(tmp_path: Path) -> None:
    small, large = document("small"), document("large", input_value="x" * 5_000)
    archive = tmp_path / "traces.jsonl"
    archive.write_text(
        "\n".join(d.model_dump_json(exclude_none=True) for d in (small, large)) + "\n"
    )
    read: list[int] = []
    selection = select([archive], Scope(), read.append, max_document_bytes=4_000)
    assert (selection.chosen, selection.unreadable) == (1, 1)
    [refused] = selection.examples
    assert (refused.path, refused.line) == (archive, 2)
    assert refused.reason.startswith("document is 5") and refused.reason.endswith("limit 4000")
    assert sum(read) == archive.stat().st_size
