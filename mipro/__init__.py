"""The mipro backend's shared package: settings, the stack launcher, the CLI, the local model."""

import os as _os

# The processes of this project fork only to exec (`Stack.spawn`, Envoy), and they do it with a
# `preexec_fn` (`_parent_death.py`), so the child runs Python's after-fork handlers. gRPC's
# core registers fork handlers of its own unless this is off; in a process with gRPC threads
# running, its child handler restarts a poller that `close_fds` then breaks, and the child
# aborts before it execs ("epoll_wait error: Bad file descriptor", grpc/grpc#43055; seen once
# as Envoy "exiting" with -6 in a test). It must be set before gRPC starts, so it is set here,
# in the package every one of those processes imports first. A caller's own value is kept.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
