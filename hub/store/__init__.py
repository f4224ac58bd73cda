"""Storage backends for the hub; SQLite (store/sqlite.py) is the embedded default.

A backend provides the `Store` boundary of hub/interfaces.py. Nothing outside
this package imports a database module or sees a connection: the rest of the
hub calls Store methods and gets plain values back.
"""

from ..interfaces import StoreClosed
from .sqlite import SqliteStore, stored_readings

__all__ = ["SqliteStore", "StoreClosed", "stored_readings"]
