"""Persistent state in the state dir's ``stackd.db``: the switch journal, the active stack and
the history (``store``), and the router's usage ledger (``usage``)."""

from stackd.state.store import HistoryEntry, JournalEntry, StateStore

__all__ = ["HistoryEntry", "JournalEntry", "StateStore"]
