"""The sign-off audit trail: who confirmed or changed which eye's decision, when, and what the model said.

One SQLite file (the app keeps it in the user's data folder), append-only: a sign-off is never edited
or deleted; signing an eye again appends a new record and the newest one counts. The database refuses
UPDATE and DELETE (triggers), and every record carries the SHA-256 of its content and of the record
before it, so :meth:`AuditTrail.verify` finds a record changed or removed behind the app's back.

A record names the exam by its UIDs and the patient id (the trail is the clinic's record of who
signed what, like the PACS it lives next to); it never holds pixels or file paths.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from core.errors import InputError

__all__ = [
    "AuditError",
    "AuditTrail",
    "CLINICIAN_DECISIONS",
    "SignOff",
    "eye_record_key",
    "signoff_for",
]

#: What the clinician can decide for an eye: the model's tier ids plus "confirmed" (keep the model's).
CLINICIAN_DECISIONS = ("confirmed", "urgent", "soon", "routine", "review", "none", "rescan")

_SCHEMA_VERSION = 1
_GENESIS = "0" * 64
_FIELDS = (
    "patient_id",
    "study_uid",
    "series_uid",
    "laterality",
    "laterality_set_by_user",
    "model_tier",
    "model_label",
    "model_scores",
    "model_name",
    "model_version",
    "model_sha256",
    "decision",
    "finding",
    "clinician",
    "signed_at",
)


class AuditError(InputError):
    """The audit trail cannot be opened, written or trusted: ``AuditError(path, problem)``, its
    message names the file."""


@dataclass(frozen=True)
class SignOff:
    """One clinician's sign-off of one eye.

    ``decision`` is "confirmed" (the model's tier stands) or the tier id the clinician chose instead;
    ``signed_at`` is an aware local time. ``model_*`` is what the model said, so the trail stays
    readable without the exam.
    """

    patient_id: str
    study_uid: str
    series_uid: str
    laterality: str  # 'OD' / 'OS' / 'unknown' when signed
    model_tier: str  # core.results.Urgency value
    model_label: str
    model_name: str
    model_version: str
    model_sha256: str
    decision: str
    clinician: str
    finding: str = ""
    laterality_set_by_user: bool = False
    model_scores: dict[str, float] = field(default_factory=dict)
    signed_at: _dt.datetime = field(default_factory=lambda: _dt.datetime.now().astimezone())
    record_id: int | None = None  # set once stored

    def __post_init__(self) -> None:
        if self.decision not in CLINICIAN_DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(CLINICIAN_DECISIONS)}, got {self.decision!r}")
        if not self.clinician.strip():
            raise ValueError("a sign-off needs the clinician's name")
        if self.signed_at.tzinfo is None:
            raise ValueError("signed_at must be an aware datetime (with its time zone)")

    @property
    def changed(self) -> bool:
        """True when the clinician decided otherwise than the model."""
        return self.decision != "confirmed" and self.decision != self.model_tier

    @property
    def final_tier(self) -> str:
        """The tier that stands after the sign-off: the model's when confirmed, else the clinician's."""
        return self.model_tier if self.decision == "confirmed" else self.decision

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Which eye this signs (``eye_record_key``)."""
        return (self.patient_id, self.study_uid, self.series_uid, self.laterality)

    def signed_text(self) -> str:
        """'2026-12-02 16:40 CET' style: the time in this computer's time zone, with the zone (a record
        read back keeps only its UTC offset; shown here as local time again)."""
        return self.signed_at.astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()

    def _payload(self) -> dict:
        d = asdict(self)
        d.pop("record_id")
        d["signed_at"] = self.signed_at.isoformat()
        d["model_scores"] = {k: float(v) for k, v in sorted(self.model_scores.items())}
        return {k: d[k] for k in _FIELDS}


def eye_record_key(eye) -> tuple[str, str, str, str]:
    """The audit key of an ``EyeResult``: patient id, study UID, series UID and laterality."""
    vr = eye.volume_result
    series = vr.volume.study.series_uid if vr is not None else ""
    return (eye.eye.patient_id, eye.eye.study_uid, series, eye.eye.laterality.value)


def signoff_for(
    eye,
    card,
    *,
    decision: str,
    clinician: str,
    finding: str = "",
    signed_at: _dt.datetime | None = None,
) -> SignOff:
    """A :class:`SignOff` of an ``EyeResult`` screened with ``card`` (a ``ModelCard``)."""
    patient_id, study_uid, series_uid, laterality = eye_record_key(eye)
    return SignOff(
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        laterality=laterality,
        laterality_set_by_user=bool(eye.laterality_set_by_user),
        model_tier=eye.urgency.value,
        model_label=eye.label,
        model_scores={k: float(v) for k, v in eye.scores.items()},
        model_name=card.name,
        model_version=card.version,
        model_sha256=card.weights_sha256,
        decision=decision,
        clinician=clinician.strip(),
        finding=finding.strip(),
        signed_at=signed_at or _dt.datetime.now().astimezone(),
    )


def _digest(prev: str, payload: dict) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev + "\n" + text).encode()).hexdigest()


class AuditTrail:
    """The append-only sign-off store at ``path`` (created with its folder on first use).

    Thread-safe (one connection, one lock); every method opens nothing else. ``AuditError`` names the
    file when it cannot be opened, is not an OCT Screen audit trail, or fails :meth:`verify`.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.Lock()
        try:
            if read_only:  # an auditor's look: nothing created, nothing written (the file must exist)
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
                self._check_schema()
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            # a rollback journal, not WAL: every committed record is in the one file (a copy of it is the
            # whole trail) and a read-only reader leaves no side files; FULL: on disk when append returns
            self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.execute("PRAGMA synchronous=FULL")
            self._create()
        except sqlite3.DatabaseError as e:
            raise AuditError(self.path, f"not a usable audit trail ({e})") from e
        except OSError as e:
            raise AuditError(self.path, f"cannot open the audit trail ({e.strerror or e})") from e

    def _check_schema(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None or row[0] != str(_SCHEMA_VERSION):
            found = "none" if row is None else row[0]
            raise AuditError(self.path, f"audit trail schema {found} (this version reads {_SCHEMA_VERSION})")

    def _create(self) -> None:
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(_SCHEMA_VERSION),))
            db.execute("INSERT INTO meta VALUES ('application', 'OCT Screen audit trail')")
        elif row[0] != str(_SCHEMA_VERSION):
            raise AuditError(self.path, f"audit trail schema {row[0]} (this version reads {_SCHEMA_VERSION})")
        cols = ", ".join(f"{f} TEXT NOT NULL" for f in _FIELDS)
        db.execute(
            f"CREATE TABLE IF NOT EXISTS signoff (id INTEGER PRIMARY KEY AUTOINCREMENT, {cols}, "
            "prev_sha256 TEXT NOT NULL, sha256 TEXT NOT NULL)"
        )
        for what in ("UPDATE", "DELETE"):
            db.execute(
                f"CREATE TRIGGER IF NOT EXISTS signoff_no_{what.lower()} BEFORE {what} ON signoff "
                "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"
            )
        db.execute("CREATE INDEX IF NOT EXISTS signoff_eye ON signoff (patient_id, study_uid, series_uid, laterality)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _guard(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as e:
                raise AuditError(self.path, f"cannot {what} ({e})") from e

    # -- writing -----------------------------------------------------------------------------
    def append(self, signoff: SignOff) -> SignOff:
        """Store ``signoff`` after the newest record; return it with its ``record_id``."""
        payload = signoff._payload()
        with self._guard("record the sign-off") as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT sha256 FROM signoff ORDER BY id DESC LIMIT 1").fetchone()
                prev = row[0] if row else _GENESIS
                values = [self._text(payload[f]) for f in _FIELDS]
                cur = db.execute(
                    f"INSERT INTO signoff ({', '.join(_FIELDS)}, prev_sha256, sha256) "
                    f"VALUES ({', '.join('?' * (len(_FIELDS) + 2))})",
                    (*values, prev, _digest(prev, payload)),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return replace(signoff, record_id=int(cur.lastrowid or 0))

    @staticmethod
    def _text(value: object) -> str:
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, dict):
            return json.dumps(value, sort_keys=True)
        return str(value)

    # -- reading -----------------------------------------------------------------------------
    def _rows(self, where: str = "", args: Sequence[str] = ()) -> list[tuple]:
        with self._guard("read the audit trail") as db:
            cols = ", ".join(("id", *_FIELDS, "prev_sha256", "sha256"))
            return db.execute(f"SELECT {cols} FROM signoff {where} ORDER BY id", tuple(args)).fetchall()

    @staticmethod
    def _from_row(row: tuple) -> SignOff:
        values = dict(zip(_FIELDS, row[1 : 1 + len(_FIELDS)], strict=True))
        return SignOff(
            **{k: v for k, v in values.items() if k not in ("laterality_set_by_user", "model_scores", "signed_at")},
            laterality_set_by_user=values["laterality_set_by_user"] == "1",
            model_scores={k: float(v) for k, v in json.loads(values["model_scores"]).items()},
            signed_at=_dt.datetime.fromisoformat(values["signed_at"]),
            record_id=int(row[0]),
        )

    def records(self) -> list[SignOff]:
        """Every sign-off, oldest first."""
        return [self._from_row(r) for r in self._rows()]

    def history(self, key: tuple[str, str, str, str]) -> list[SignOff]:
        """The sign-offs of one eye (``eye_record_key``), oldest first."""
        where = "WHERE patient_id=? AND study_uid=? AND series_uid=? AND laterality=?"
        return [self._from_row(r) for r in self._rows(where, key)]

    def latest(self, key: tuple[str, str, str, str]) -> SignOff | None:
        """The sign-off that counts for one eye (its newest), or None if it was never signed."""
        hist = self.history(key)
        return hist[-1] if hist else None

    def verify(self) -> int:
        """Check the chain of digests; return the number of records. ``AuditError`` names the first
        record that was changed, or where records are missing."""
        prev = _GENESIS
        rows = self._rows()
        for row in rows:
            so = self._from_row(row)
            stored_prev, stored = row[-2], row[-1]
            if stored_prev != prev:
                raise AuditError(self.path, f"the audit trail is broken before record {row[0]} (a record was removed)")
            if _digest(prev, so._payload()) != stored:
                raise AuditError(self.path, f"record {row[0]} of the audit trail was changed after it was written")
            prev = stored
        return len(rows)
