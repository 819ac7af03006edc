"""One logging setup for every service and the CLI.

structlog everywhere: JSON lines in services (machine-readable, one event per line), a readable
coloured console renderer on a terminal.  A request id travels in a context variable so every log
line of one request carries it, across gRPC (metadata ``x-request-id``) and Celery (task headers).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import uuid
from contextvars import ContextVar
from typing import Literal

import structlog

LogFormat = Literal["auto", "json", "console"]

REQUEST_ID_HEADER = "x-request-id"
_request_id: ContextVar[str | None] = ContextVar("prism_request_id", default=None)
_configured = False


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def current_request_id() -> str | None:
    return _request_id.get()


def bind_request_id(request_id: str | None) -> str:
    """Bind (or create) the request id for the current context; returns it."""
    rid = request_id or new_request_id()
    _request_id.set(rid)
    structlog.contextvars.bind_contextvars(request_id=rid)
    return rid


def clear_request_context() -> None:
    _request_id.set(None)
    structlog.contextvars.clear_contextvars()


def _exception_formatter(colors: bool) -> structlog.typing.ExceptionRenderer:
    """Tracebacks without local variables: structlog's rich default prints every frame's locals,
    which in the gateway are a shopper's query photo or video (never logged: only size, type, hash)."""
    if importlib.util.find_spec("rich") is not None:
        return structlog.dev.RichTracebackFormatter(show_locals=False, color_system="truecolor" if colors else None)
    return structlog.dev.plain_traceback


def setup_logging(level: str = "INFO", fmt: LogFormat = "auto", *, force: bool = False) -> None:
    """Configure structlog and the stdlib root logger (idempotent unless ``force``)."""
    global _configured
    if _configured and not force:
        return
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    colors = sys.stderr.isatty()
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=_exception_formatter(colors))
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (uvicorn, celery, qdrant) go through the same renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True
