"""Child processes that exit when the process that started them dies, even by SIGKILL.

On Linux, `die_with_parent()` returns a `preexec_fn` that runs in the child between fork and
exec and asks the kernel to send it `PARENT_DEATH_SIGNAL` when its parent dies
(`prctl(PR_SET_PDEATHSIG)`). The setting survives exec, so it covers Envoy, a C++ binary,
as well as our Python servers. A parent that died before the call is caught by checking,
after it, that the parent is still the process that forked us; if not, the child exits at
once.

SIGTERM is the signal: every service of the stack treats it as "stop now" and exits within
seconds (the gRPC servers finish in-flight calls within their grace period, the orchestrator
lets its writes finish and resumes the jobs on the next start, uvicorn and Envoy close their
listeners), so a `kill -9` of `mipro up` ends the whole stack and frees its ports.

Two limits of the kernel's mechanism:

- The signal is sent when the *thread* that forked the child exits, not the whole process.
  `Stack` forks from the thread its event loop runs in (the main thread for `mipro up`,
  `mipro demo` and the tests); a loop in a short-lived thread would stop its children early.
- Elsewhere than Linux there is no such call: `die_with_parent()` returns None, and children
  outlive a parent killed by SIGKILL (a normal stop still stops them by pid).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

#: The signal a child gets when its parent dies.
PARENT_DEATH_SIGNAL = signal.SIGTERM
#: `PR_SET_PDEATHSIG` from <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1
#: The child's exit code when its parent died before the child could ask for the signal.
_ORPHANED_EXIT_CODE = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # Resolved here, in the parent: the child must not load libraries between fork and exec.
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()


def die_with_parent(sig: signal.Signals = PARENT_DEATH_SIGNAL) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get `sig` when this process dies, or None where the
    platform has no parent-death signal."""
    prctl = _prctl
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(sig)) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
        if os.getppid() != parent:  # the parent died before the prctl call took effect
            os._exit(_ORPHANED_EXIT_CODE)

    return preexec
