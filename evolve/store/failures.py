"""What a failed store operation means: ours to resolve, worth a retry, or fatal.

Backends raise their own types (botocore's ClientError with an HTTP status and code, aiohttp's
connection errors, OSError with an errno); ``classify`` maps any of them to the four outcomes the
store acts on, and every failure reaches the caller as a one-line :class:`StoreError`.
"""

from __future__ import annotations

import errno

__all__ = ["CorruptRecord", "ExportError", "StoreError", "classify", "http_status", "is_backend_error", "reason"]


class StoreError(Exception):
    """A store operation failed; the message is one line naming the URL and key."""


class ExportError(StoreError):
    """An export cannot be made or written (the run's Parquet table, a model's folder); one line."""


class CorruptRecord(StoreError):
    """A record exists but does not parse as a JSON object."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"corrupt record {key!r}: {reason}")
        self.key = key
        self.reason = reason

    def __reduce__(self):  # rebuilt from its fields: a Ray actor's error reaches the driver intact
        return type(self), (self.key, self.reason)


# errno values that no amount of retrying will fix
_FATAL_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ENAMETOOLONG,
    errno.EDQUOT,
    errno.EINVAL,
    errno.ENOENT,
    errno.EXDEV,
}
_TRANSIENT_CODES = {
    "SlowDown",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
}


def http_status(exc: BaseException) -> tuple[int | None, str | None]:
    """(HTTP status, error code) of a botocore ClientError anywhere in the exception's chain."""
    seen = 0
    while exc is not None and seen < 5:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = response.get("Error", {}).get("Code")
            return (int(status) if status is not None else None), code
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None, None


def _is_timeout_or_connection(exc: BaseException) -> bool:
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(
        names
        & {
            "FSTimeoutError",
            "HTTPClientError",
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "ReadTimeoutError",
            "ConnectionClosedError",
            "ClientConnectionError",
            "ServerDisconnectedError",
            "ClientPayloadError",
            "IncompleteRead",
            "ResponseParserError",
            "ServerTimeoutError",
        }
    )


# libraries whose own exception types mean "the backend refused" (no credentials, bad parameters),
# never a bug of ours: they become one-line StoreErrors instead of tracebacks
_BACKEND_MODULES = {"botocore", "aiobotocore", "boto3", "s3fs", "gcsfs", "google", "adlfs", "azure", "fsspec",
                    "aiohttp", "requests", "urllib3"}


def is_backend_error(exc: BaseException) -> bool:
    return any(cls.__module__.split(".", 1)[0] in _BACKEND_MODULES for cls in type(exc).__mro__)


def classify(exc: BaseException) -> str:
    """'exists', 'conflict' (409/412: read back), 'transient' (retry) or 'fatal'."""
    if isinstance(exc, StoreError):
        return "fatal"
    if isinstance(exc, FileExistsError):
        return "exists"
    status, code = http_status(exc)
    if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
        return "conflict"
    if status is not None and (status >= 500 or status == 429) or code in _TRANSIENT_CODES:
        return "transient"
    if _is_timeout_or_connection(exc):
        return "transient"
    if status is not None and 400 <= status < 500:
        return "fatal"
    if isinstance(exc, OSError):
        return "fatal" if exc.errno in _FATAL_ERRNOS else "transient"
    return "fatal"


def reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
