"""The optional compiled module ``media._fastpath``, imported in one place.

``fastpath`` is that module, or None: not built (no C compiler when installing; everything then
runs in Python, slower), or turned off with ``LIENTHONG_PURE_PYTHON=1`` in the environment (an
operator's switch when the compiled path is suspected; read once, at import).  What it holds:

- ``Sender``: one subscriber's send (header, SRTP protect, ``sendto``): ``media.rtc_adapter``;
- ``SlotRewriter`` and ``Vp8Rewriter``: ``media.rtp_rewrite.SlotRewriter`` and
  ``media.vp8.Vp8Rewriter`` in C, the same API and results (the Python classes stay the
  reference: tests run both on the same packets);
- ``Lane``, ``fanout_video`` and ``fanout_audio``: the forwarder's per-subscriber loop
  (``media.forwarder``), which hands a subscriber to the Python code whenever a packet needs it.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["fastpath", "PURE_PYTHON_ENV", "SWITCHED_OFF"]

PURE_PYTHON_ENV = "LIENTHONG_PURE_PYTHON"
SWITCHED_OFF = os.environ.get(PURE_PYTHON_ENV, "").strip() not in ("", "0")   # by the operator

fastpath: Any = None
if not SWITCHED_OFF:
    try:
        from media import _fastpath as fastpath  # type: ignore[attr-defined,no-redef]  # (a C extension: no stubs)
    except ImportError:  # pragma: no cover - machines without a C compiler
        fastpath = None
