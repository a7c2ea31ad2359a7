"""A bound on how long a worker may take to stop.

A worker that stops finishes what it took on, commits and leaves its group. Against a broker it
cannot reach, each of those steps waits on a Kafka client that retries for as long as its own
timeouts allow: a commit until the group coordinator answers, Faust's producer for its 20-minute
request timeout. A stop that never ends is worse than a crash, since an operator or an
orchestrator then has to kill the worker without knowing why it hangs. So past the bound the
worker says why and exits as a SIGKILL would leave it, which the pipeline is built for: nothing
was committed past what was delivered, and whichever worker takes the partitions reads the rest
again.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import NoReturn

log = logging.getLogger(__name__)


class StopDeadline:
    """Exit the process with `exit_code` if it is still running `seconds` after `arm()`."""

    def __init__(self, seconds: float, exit_code: int) -> None:
        self.seconds = seconds
        self.exit_code = exit_code
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def arm(self) -> None:
        """The stop has begun. Only the first call starts the clock."""
        with self._lock:
            if self._timer is not None:
                return
            # A thread of its own: the stop may be stuck in the event loop or in a client's thread.
            self._timer = threading.Timer(self.seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> NoReturn:
        log.error(
            "the stop took more than %g s (is the broker reachable?): exiting without waiting "
            "further; what this worker did not commit is read again by the next one",
            self.seconds,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(self.exit_code)
