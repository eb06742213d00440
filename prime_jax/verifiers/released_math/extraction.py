"""The released grader's answer extraction (docs/math_grading.md, "Extraction").

Unlike `strict` (prime_jax.verifiers.math_answer), it always returns some text: the content of the
last box when there is one, else the whole response, then trimmed to what follows the last
"=", "is", ":" and a few other markers. So `\\boxed{f(2)=5}` grades "5", and an unboxed or
empty-boxed response grades the tail of its last sentence.
"""

from __future__ import annotations

# Applied in this order, each to what the previous one left (as the released code does).
_KEEP_AFTER_LAST = ("answer:", "answer is", "answers are")
_KEEP_BEFORE_LAST = ("is answer", "is the answer", "are answers", "are the answers")
_TAIL_MARKERS = ("be ", "is ", "are ", "=", ": ", "get ", "be\n", "is\n", "are\n", ":\n", "get\n")


def _rfind_lower(text: str, marker: str) -> int:
  """Position of `marker` in the lower-cased text, used as a position in `text` itself.

  The released code does exactly this; for the rare characters whose lower case is longer
  (e.g. 'İ') the position is off, and so is the released cut, which we keep.
  """
  return text.lower().rfind(marker)


def _after_last(text: str, marker: str) -> str:
  at = _rfind_lower(text, marker)
  return text if at < 0 else text[at + len(marker) :].strip()


def _before_last(text: str, marker: str) -> str:
  at = _rfind_lower(text, marker)
  return text if at < 0 else text[:at].strip()


def last_box(text: str) -> str | None:
  """Content of the last `\\boxed` (or, when there is none, the last `\\fbox`), stripped.

  Braces are counted from the box command on without regard to escapes (`\\{` counts), from
  the first `{` after it, which need not follow it directly. None when no brace closes.
  """
  start = text.rfind("\\boxed")
  if start < 0:
    start = text.rfind("\\fbox")
    if start < 0:
      return None
  depth, opened = 0, None
  for i in range(start, len(text)):
    if text[i] == "{":
      depth += 1
      if opened is None:
        opened = i
    elif text[i] == "}":
      depth -= 1
      if depth == 0:  # only reachable after a '{', so `opened` is set
        return text[opened + 1 : i].strip()
  return None


def released_answer(response: str) -> str:
  """The text the released grader compares with the ground truth (possibly empty)."""
  for marker in _KEEP_AFTER_LAST:
    response = _after_last(response, marker)
  for marker in _KEEP_BEFORE_LAST:
    response = _before_last(response, marker)
  boxed = last_box(response)
  if boxed:  # an empty box is ignored: the response itself is graded
    response = boxed
  sentence_end = _rfind_lower(response, ". ")
  if sentence_end >= 0:  # drops the last sentence, or whatever follows ". " inside a box
    response = response[:sentence_end].strip()
  for marker in _TAIL_MARKERS:
    response = _after_last(response, marker)
  return response
