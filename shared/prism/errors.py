"""Errors that cross service boundaries.

Every error a caller can cause is an ``InvalidInput`` with a stable machine-readable ``code``;
the gRPC wrapper maps it to INVALID_ARGUMENT and the HTTP gateway to a 4xx response with
``{"error": {"code", "message"}}``.  Anything else is a bug or an outage, never the caller's fault.
"""

from __future__ import annotations


class PrismError(Exception):
    """Base class for errors Prism raises on purpose."""

    code: str = "internal"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(PrismError):
    """The caller sent something we refuse (bad media, empty text, bad filter ...)."""

    code = "invalid_argument"
    http_status = 400


class MediaError(InvalidInput):
    """Media that cannot be accepted: corrupt, too large, unsupported format, decompression bomb."""

    code = "invalid_media"


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"
    http_status = 413


class NotFound(PrismError):
    code = "not_found"
    http_status = 404


class Unavailable(PrismError):
    """A downstream service (encoder, index) cannot answer right now: retry later."""

    code = "unavailable"
    http_status = 503


class DeadlineExceeded(PrismError):
    code = "deadline_exceeded"
    http_status = 504
