"""`tracebus schemas export|check`."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import run_cli

from tracebus.schemas.export import json_schemas


def test_export_then_check_passes(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    result = run_cli("schemas", "export", "--out", str(out))
    assert result.exit_code == 0, result.output
    for name, content in json_schemas().items():
        assert (out / name).read_bytes() == content
        assert name in result.output

    result = run_cli("schemas", "check", "--dir", str(out))
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_check_fails_on_a_modified_file_and_lists_it(tmp_path: Path) -> None:
    assert run_cli("schemas", "export", "--out", str(tmp_path)).exit_code == 0
    changed, missing = sorted(json_schemas())[:2]
    (tmp_path / changed).write_text('{"type": "object"}\n')
    (tmp_path / missing).unlink()

    result = run_cli("schemas", "check", "--dir", str(tmp_path))

    assert result.exit_code == 1
    assert changed in result.stdout
    assert missing in result.stdout
    unchanged = sorted(json_schemas())[2:]
    assert unchanged and not any(name in result.stdout for name in unchanged)
    assert "tracebus schemas export" in result.stderr


def test_check_of_a_missing_directory_fails(tmp_path: Path) -> None:
    result = run_cli("schemas", "check", "--dir", str(tmp_path / "nothing"))
    assert result.exit_code == 1
