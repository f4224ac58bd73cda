"""Storage backends for the hub. SQLite (store/sqlite.py) is the embedded default.

A backend provides the `Store` boundary of hub/interfaces.py: `write()` for a
report's rows (resolved only once the rows are durable), `call()` to run a
query in the store's own thread, and `close()`.
"""

from .sqlite import KIND_BOOL, KIND_DATA, KIND_NUM, KIND_STR, SqliteStore, StoreClosed, WriteResult

__all__ = [
    "KIND_BOOL", "KIND_DATA", "KIND_NUM", "KIND_STR", "SqliteStore", "StoreClosed", "WriteResult",
]
