"""Answers and raters of a study in SQLite, written the moment they are given.

Raters are known by a private token (32 random hex digits, :mod:`secrets`): the link
``/r/<token>`` is a rater's identity, so nobody who merely knows or guesses a rater's name can
see or change that rater's answers. Only the token's sha256 is stored. The server's secret for
CSRF tokens lives here too (``meta``), so forms stay valid across a server restart.

WAL journal with ``synchronous=FULL``: a committed answer survives the server being killed
(and a power cut). ``UNIQUE(rater, image_id)`` makes a repeated submission a no-op when
answers are locked, and an in-place revision (counted) when they are not, so an image is never
recorded twice for one rater. Each call opens its own connection, so the store is safe to use
from the web server's threads and from several processes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from synthex.vtt import VTTError

ANSWERS = ("real", "synthetic")
CONFIDENCES = range(1, 6)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    rater       TEXT    NOT NULL,
    image_id    TEXT    NOT NULL,
    answer      TEXT    NOT NULL CHECK (answer IN ('real', 'synthetic')),
    confidence  INTEGER NOT NULL CHECK (confidence BETWEEN 1 AND 5),
    elapsed_ms  INTEGER,
    answered_at TEXT    NOT NULL,
    revisions   INTEGER NOT NULL DEFAULT 0,
    UNIQUE (rater, image_id)
);
CREATE TABLE IF NOT EXISTS raters (
    rater        TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    created      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
MAX_ELAPSED_MS = 24 * 3600 * 1000  # a longer "time on image" is not a measurement


@dataclass(frozen=True)
class Answer:
    rater: str
    image_id: str
    answer: str  # "real" | "synthetic"
    confidence: int  # 1 (guessing) .. 5 (certain)
    elapsed_ms: int | None = None


class AnswerStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        with closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('csrf_secret', ?)", (secrets.token_hex(32),))
            db.commit()

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as e:
            raise VTTError(f"{self.path}: cannot open the answers database ({e})") from None
        db.execute("PRAGMA synchronous=FULL")
        return db

    def record(self, answer: Answer, allow_change: bool = False) -> bool:
        """Store one answer; True if it was stored (new, or changed when ``allow_change``)."""
        if answer.answer not in ANSWERS:
            raise VTTError(f"answer must be one of {ANSWERS}, got {answer.answer!r}")
        if answer.confidence not in CONFIDENCES:
            raise VTTError(f"confidence must be 1..5, got {answer.confidence!r}")
        if answer.elapsed_ms is not None and not 0 <= answer.elapsed_ms <= MAX_ELAPSED_MS:
            raise VTTError(f"elapsed_ms must be 0..{MAX_ELAPSED_MS} (24 h), got {answer.elapsed_ms!r}")
        on_conflict = (
            "DO UPDATE SET answer = excluded.answer, confidence = excluded.confidence, "
            "elapsed_ms = excluded.elapsed_ms, answered_at = excluded.answered_at, revisions = revisions + 1 "
            "WHERE answer != excluded.answer OR confidence != excluded.confidence"
            if allow_change
            else "DO NOTHING"
        )
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                "INSERT INTO answers (rater, image_id, answer, confidence, elapsed_ms, answered_at) "
                f"VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (rater, image_id) {on_conflict}",
                (answer.rater, answer.image_id, answer.answer, int(answer.confidence), answer.elapsed_ms, now),
            )
            return cursor.rowcount == 1

    def answers(self, rater: str | None = None) -> list[Answer]:
        query = "SELECT rater, image_id, answer, confidence, elapsed_ms FROM answers"
        args: tuple = ()
        if rater is not None:
            query, args = query + " WHERE rater = ?", (rater,)
        with closing(self._connect()) as db:
            rows = db.execute(query + " ORDER BY rater, answered_at, image_id", args).fetchall()
        return [Answer(*row) for row in rows]

    def answer_for(self, rater: str, image_id: str) -> Answer | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT rater, image_id, answer, confidence, elapsed_ms FROM answers WHERE rater = ? AND image_id = ?",
                (rater, image_id),
            ).fetchone()
        return Answer(*row) if row else None

    def answered_ids(self, rater: str) -> set[str]:
        with closing(self._connect()) as db:
            return {row[0] for row in db.execute("SELECT image_id FROM answers WHERE rater = ?", (rater,))}

    # ------------------------------------------------------------------ raters and secrets

    def add_rater(self, rater: str) -> str:
        """Register ``rater`` and return its private token (shown once; only its hash is kept)."""
        token = secrets.token_hex(16)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            with closing(self._connect()) as db, db:
                db.execute("INSERT INTO raters (rater, token_sha256, created) VALUES (?, ?, ?)", (rater, _hash(token), now))
        except sqlite3.IntegrityError:
            raise VTTError(f"rater id {rater!r} is taken; that rater resumes with their private link") from None
        return token

    def rater_for_token(self, token: str) -> str | None:
        if not TOKEN.match(token or ""):
            return None
        with closing(self._connect()) as db:
            row = db.execute("SELECT rater FROM raters WHERE token_sha256 = ?", (_hash(token),)).fetchone()
        return row[0] if row else None

    def raters(self) -> list[str]:
        with closing(self._connect()) as db:
            return [r[0] for r in db.execute("SELECT rater FROM raters ORDER BY created, rater")]

    def secret(self) -> bytes:
        with closing(self._connect()) as db:
            return bytes.fromhex(db.execute("SELECT value FROM meta WHERE key = 'csrf_secret'").fetchone()[0])


TOKEN = re.compile(r"^[0-9a-f]{32}$")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
