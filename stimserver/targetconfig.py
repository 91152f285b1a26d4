"""Moved to ``stimserver.schemas.targets``; kept only so unmerged importers still load.

``store/importer.py`` and a few tests import these two constants from here; the store
rewrite drops that import. Delete this module once nothing imports it.
"""
from .schemas.targets import DEFAULT_BASE_MODEL, DEFAULT_TARGET_CONFIG

__all__ = ["DEFAULT_BASE_MODEL", "DEFAULT_TARGET_CONFIG"]
