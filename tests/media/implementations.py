"""The two implementations of the slot rewriters, for tests that must hold for both: the Python
reference classes and media._fastpath's (skipped, saying so, when that is not built)."""

from __future__ import annotations

from typing import Any

import pytest

from media import native
from media.rtp_rewrite import PySlotRewriter
from media.vp8 import PyVp8Rewriter

_compiled = native.fastpath

REWRITERS: list[Any] = [
    pytest.param((PySlotRewriter, PyVp8Rewriter), id="python"),
    pytest.param((getattr(_compiled, "SlotRewriter", None), getattr(_compiled, "Vp8Rewriter", None)), id="compiled",
                 marks=pytest.mark.skipif(_compiled is None, reason="media._fastpath is not built")),
]
