"""``octscreen audit verify|list``: an auditor reads the sign-off trail without changing it."""

from __future__ import annotations

import csv
import hashlib
import sqlite3

from app.cli import main
from app.cmd_audit import CSV_COLUMNS
from core.audit import AuditTrail
from tests.test_audit import make_signoff


def _trail(tmp_path):
    path = tmp_path / "audit.sqlite"
    with AuditTrail(path) as t:
        t.append(make_signoff())
        t.append(make_signoff(decision="soon", finding="Intraretinal cysts"))
        t.append(make_signoff(patient_id="P002", laterality="OS", finding=""))
    return path


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_verify_and_list_read_the_trail_and_change_nothing(tmp_path, capsys):
    path = _trail(tmp_path)
    before = _digest(tmp_path)
    assert main(["audit", "verify", "--trail", str(path)]) == 0
    assert "3 sign-off record(s), chain intact" in capsys.readouterr().out
    assert main(["audit", "list", "--trail", str(path), "--patient", "P001"]) == 0
    out = capsys.readouterr().out
    assert "#1 " in out and "confirmed" in out and "#2 " in out and "changed urgent -> soon" in out
    assert "Intraretinal cysts" in out and "P002" not in out and "2 sign-off(s)" in out
    assert _digest(tmp_path) == before  # read only: the trail's files are byte for byte as they were


def test_list_as_csv_never_overwrites(tmp_path, capsys):
    path = _trail(tmp_path)
    out = tmp_path / "signoffs.csv"
    assert main(["audit", "list", "--trail", str(path), "--csv", str(out)]) == 0
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == CSV_COLUMNS and len(rows) == 3
    assert [(r["decision"], r["final_tier"], r["changed"]) for r in rows[:2]] == [
        ("confirmed", "urgent", ""),
        ("soon", "soon", "yes"),
    ]
    assert rows[0]["model_sha256"] == "ab" * 32 and rows[0]["signed_at"].endswith("+01:00")
    stamp = out.read_bytes()
    assert main(["audit", "list", "--trail", str(path), "--csv", str(out)]) == 2  # exists: refused
    assert out.read_bytes() == stamp and "not written" in capsys.readouterr().err


def test_a_changed_record_fails_verify_with_exit_1(tmp_path, capsys):
    path = _trail(tmp_path)
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER signoff_no_update")
    db.execute("UPDATE signoff SET clinician='Someone else' WHERE id=2")
    db.commit()
    db.close()
    assert main(["audit", "verify", "--trail", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "record 2" in err and "changed" in err


def test_missing_or_foreign_trail_exit_2(tmp_path, capsys):
    assert main(["audit", "verify", "--trail", str(tmp_path / "none.sqlite")]) == 2
    assert "no audit trail there" in capsys.readouterr().err
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not sqlite " * 300)
    assert main(["audit", "list", "--trail", str(junk)]) == 2
    assert str(junk) in capsys.readouterr().err
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE x (a)").connection.close()
    assert main(["audit", "verify", "--trail", str(other)]) == 2
    assert "not a usable audit trail" in capsys.readouterr().err
