"""What a storage error means: one line describing it, whether it is worth retrying, and retries.

Storage faults come in two kinds. A transient one (a dropped connection, a timeout, HTTP 429 or
5xx from GCS, tensorstore's UNAVAILABLE) usually goes away when the same request is repeated a
little later: `retry` repeats it with exponential backoff. Any other (a missing or truncated
file, a full disk, no permission) does not, and is raised at once. Either way the error that
reaches the user is one line (`describe`), not a page of tensorstore specs.
"""

from __future__ import annotations

import re
import time
from typing import Callable, Iterator, TypeVar

from absl import logging

T = TypeVar("T")

ATTEMPTS = 5  # tries of one operation, the first included
FIRST_DELAY_S = 1.0  # wait before the second try; doubled before each later one

_TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_STATUS = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED")
# An absl status code (tensorstore's errors start with one): "OUT_OF_RANGE: Error reading ..."
_STATUS = re.compile(
    r"\b(CANCELLED|UNKNOWN|INVALID_ARGUMENT|DEADLINE_EXCEEDED|NOT_FOUND|ALREADY_EXISTS|"
    r"PERMISSION_DENIED|RESOURCE_EXHAUSTED|FAILED_PRECONDITION|ABORTED|OUT_OF_RANGE|"
    r"UNIMPLEMENTED|INTERNAL|UNAVAILABLE|DATA_LOSS|UNAUTHENTICATED): "
)
_MAX_CHARS = 400


class RemoteIOError(OSError):
  """An operation on remote storage that kept failing with transient errors until the retries
  ran out."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
  """`exc` and the exceptions it was raised from or while handling, outermost first."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    yield exc
    exc = exc.__cause__ or exc.__context__


def _http_code(exc: BaseException):
  """The HTTP status of a gcsfs / google-api-core / requests error, if it carries one."""
  code = getattr(exc, "code", None)
  if code is None:
    code = getattr(getattr(exc, "response", None), "status_code", None)
  return code if isinstance(code, int) else None


def is_transient(exc: BaseException) -> bool:
  """Whether repeating the failed operation later may well succeed."""
  for e in _chain(exc):
    if isinstance(e, (ConnectionError, TimeoutError)) or _http_code(e) in _TRANSIENT_HTTP:
      return True
    match = _STATUS.search(str(e))
    if match and match.group(1) in _TRANSIENT_STATUS:
      return True
  return False


def describe(exc: BaseException) -> str:
  """One line saying what went wrong: the storage status message when the chain holds one
  (without tensorstore's spec dump), else the type and first line of the exception `exc` was
  raised from (`raise ... from`; an exception met while handling another is not its cause)."""
  for e in _chain(exc):
    text = str(e)
    match = _STATUS.search(text)
    if match:
      return _first_line(text[match.start() :].split(" [tensorstore_spec=")[0])
  root = exc
  while root.__cause__ is not None:
    root = root.__cause__
  return _first_line(f"{type(root).__name__}: {root}")


def _first_line(text: str) -> str:
  """The first line of `text`; a long one keeps its start (what failed) and its end (the
  system's reason, e.g. "File too large")."""
  line = text.strip().splitlines()[0] if text.strip() else text
  if len(line) <= _MAX_CHARS:
    return line
  return line[: _MAX_CHARS // 2 - 3] + " ... " + line[-(_MAX_CHARS // 2 - 2) :]


def retry(operation: Callable[[], T], what: str) -> T:
  """`operation()`, repeated after FIRST_DELAY_S, 2 * FIRST_DELAY_S, ... while it fails with
  a transient error, at most ATTEMPTS times in all. A non-transient error is raised at once;
  transient ones that outlast the retries raise `RemoteIOError` naming `what`."""
  start, attempt = time.monotonic(), 1
  while True:
    try:
      return operation()
    except Exception as e:  # pylint: disable=broad-except
      if not is_transient(e):
        raise
      if attempt == ATTEMPTS:
        raise RemoteIOError(
            f"{what} failed {ATTEMPTS} times over {time.monotonic() - start:.1f} s with "
            f"transient errors; last: {describe(e)}"
        ) from e
      delay = FIRST_DELAY_S * 2 ** (attempt - 1)
      logging.warning(
          "%s: transient error (%s); try %d of %d in %.1f s",
          what,
          describe(e),
          attempt + 1,
          ATTEMPTS,
          delay,
      )
      time.sleep(delay)
      attempt += 1
