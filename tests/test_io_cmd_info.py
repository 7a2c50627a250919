"""``octscreen info``: one line per volume, one per bad file, exit codes 0 / 1 / 2."""

from __future__ import annotations

import argparse

from app import cmd_info
from core.io import write_opt
from tests.fixtures.oct_io import full_volume


def main(argv: list[str]) -> int:
    """Run the subcommand through its own parser (independent of the other subcommands' imports)."""
    parser = argparse.ArgumentParser(prog="octscreen")
    cmd_info.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_all_good_prints_volumes_and_exits_0(tmp_path, capsys):
    a = write_opt(full_volume(n=3, laterality="OD"), tmp_path / "a.dcm")
    b = write_opt(full_volume(n=2, bits=16, laterality="OS"), tmp_path / "b.dcm")
    assert main(["info", str(a), str(b)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("PID-42 OD 2026-01-31, 3 x 32 x 40") and "8-bit" in lines[0] and str(a) in lines[0]
    assert "16-bit" in lines[1] and "OS" in lines[1]
    assert "slice 0.1234 x row 0.0039 x column 0.0114 mm" in lines[0]


def test_some_bad_file_exits_1_and_names_it(tmp_path, capsys):
    write_opt(full_volume(n=2), tmp_path / "good.dcm")
    (tmp_path / "bad.bin").write_bytes(b"\x00\x01garbage" * 10)
    assert main(["info", str(tmp_path)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2
    assert out[1].startswith("error: ") and "bad.bin" in out[1]


def test_nothing_readable_exits_2(tmp_path, capsys):
    (tmp_path / "empty.dcm").write_bytes(b"")
    assert main(["info", str(tmp_path / "empty.dcm"), str(tmp_path / "missing")]) == 2
    out = capsys.readouterr().out
    assert "empty.dcm: the file is empty" in out and "missing: does not exist" in out
    assert out.count("error: ") == 2
