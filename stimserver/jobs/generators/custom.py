"""``custom``: ``oneshot_qs`` with the user's own template, which is required."""
from __future__ import annotations

from .oneshot_qs import OneshotQs


class Custom(OneshotQs):
    type = "custom"
    default_template = None
