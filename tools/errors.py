"""The errors a user can act on (shown to them as they are), defined once for every front and tool."""

from __future__ import annotations

from engine.images import BadImage
from engine.jobs.policy import PermissionDenied
from engine.runtime.diffusion.errors import DiffusionError, InvalidRequest
from engine.runtime.llm import LlmError
from engine.runtime.managed import ModelNotAvailable
from engine.store.history import HistoryQueryError
from engine.store.jobs import JobError
from engine.store.library import UnknownEntry
from tools.context import ToolError

USER_ERRORS: tuple[type[Exception], ...] = (
    ToolError,
    PermissionDenied,
    UnknownEntry,
    HistoryQueryError,
    JobError,
    BadImage,
    LlmError,
    InvalidRequest,
    DiffusionError,
    ModelNotAvailable,
    TimeoutError,
)
