"""Hook for more ``lienthong mail ...`` subcommands owned by the delivery side.

``mail.cli.register`` creates the ``mail`` subparser group and then calls
``register(msub, config_args)`` here.  The queue tools (``queue``, ``show``, ``flush``,
``hold``, ``release``, ``delete``) and ``dkim-key`` currently live in ``mail/cli.py``; new
delivery-side subcommands go here (or those may move here, keeping their names).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable


def register(msub: Any, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add subcommands to the ``mail`` group (none yet)."""
