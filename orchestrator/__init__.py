"""The orchestrator: jobs, their durable state, the MIPRO engine, the task-app client and the
interceptor that swaps candidate instructions into the task app's model calls."""

from ._models import JobStatus
from ._server import OrchestratorServer
from ._store import JobStore
from ._store_sqlite import SqliteJobStore

__all__ = ["JobStatus", "JobStore", "OrchestratorServer", "SqliteJobStore"]
