"""``DW_SQLITE_SYNCHRONOUS`` reaches the SQLite connections, and a value SQLite does not know is refused.

The setting is how an operator trades durability for speed (README: ``FULL`` survives power
loss, ``NORMAL`` only process crashes), so it must land on every connection the journal
writes and reads through: ``PRAGMA synchronous`` reads back the configured level. The path
is the node's own: ``Config.from_env`` then ``runtime.node.open_journal``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from persistence.sqlite_journal import SqliteJournal
from runtime.config import Config, ConfigError
from runtime.node import open_journal

# PRAGMA synchronous reads back a number
LEVELS = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}


async def _levels(journal: SqliteJournal) -> list[int]:
    # The journal's own connections (the pragma is per connection): the writer and the reader.
    conns = [journal._wconn, journal._rconn]  # noqa: SLF001 - nothing public exposes the connections
    assert all(c is not None for c in conns)
    return [c.execute("PRAGMA synchronous").fetchone()[0] for c in conns]  # type: ignore[union-attr]


async def _open(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None) -> SqliteJournal:
    monkeypatch.delenv("DW_DATABASE_URL", raising=False)
    if value is None:
        monkeypatch.delenv("DW_SQLITE_SYNCHRONOUS", raising=False)
    else:
        monkeypatch.setenv("DW_SQLITE_SYNCHRONOUS", value)
    cfg = Config.from_env(data_dir=str(tmp_path / "data"))
    journal = open_journal(cfg)
    assert isinstance(journal, SqliteJournal)
    await journal.open()
    return journal


async def test_the_default_is_full(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    journal = await _open(monkeypatch, tmp_path, None)
    try:
        assert await _levels(journal) == [LEVELS["FULL"]] * 2
    finally:
        await journal.aclose()


@pytest.mark.parametrize("value", ["normal", "OFF", "Extra", "FULL"])
async def test_the_configured_level_reaches_every_connection(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    journal = await _open(monkeypatch, tmp_path, value)
    try:
        assert await _levels(journal) == [LEVELS[value.upper()]] * 2
    finally:
        await journal.aclose()


# SQLite itself takes each of these without complaint and runs below the FULL default.
UNKNOWN = ["BOGUS", "FUL", "7"]


@pytest.mark.parametrize("value", UNKNOWN)
async def test_an_unknown_level_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    journal: SqliteJournal | None = None
    try:
        with pytest.raises(ConfigError, match="DW_SQLITE_SYNCHRONOUS") as refused:
            journal = await _open(monkeypatch, tmp_path, value)
        assert "OFF, NORMAL, FULL, EXTRA" in str(refused.value), "the message lists what is accepted"
    finally:
        if journal is not None:
            await journal.aclose()


@pytest.mark.parametrize("value", UNKNOWN)
def test_the_journal_refuses_an_unknown_level_too(tmp_path: Path, value: str) -> None:
    """A journal made without Config (tools, tests) must not splice an unknown word into the PRAGMA."""
    with pytest.raises(ValueError, match="(?i)synchronous"):
        SqliteJournal(str(tmp_path / "journal.sqlite3"), synchronous=value)
    assert not (tmp_path / "journal.sqlite3").exists()
