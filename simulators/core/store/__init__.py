"""The persistent store: SQLite (WAL) by default, behind small repository interfaces."""

from simulators.core.store.database import Database, Schema, register_schema

__all__ = ["Database", "Schema", "register_schema"]
