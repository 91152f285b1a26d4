"""Who a request acts as: the one value auth decides and every handler reads."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Identity"]


@dataclass(frozen=True)
class Identity:
    user: str            # whose data the request reads and writes
    key_user: str        # who the key belongs to
    is_master: bool
