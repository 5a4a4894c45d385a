"""Child processes that see Ctrl-C as a person's terminal sends it."""

from __future__ import annotations

import signal

__all__ = ["default_sigint"]


def default_sigint() -> None:
    """A ``preexec_fn``: SIGINT back to its default in the child.

    The test runner may ignore SIGINT (a background job of a non-interactive shell does, as CI
    runs it), and an ignored signal stays ignored across ``exec``: Python then installs no
    KeyboardInterrupt handler and the child never sees the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
