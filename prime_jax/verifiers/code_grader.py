"""Code outcome grading (docs/verifiers.md): fraction of test cases the response's program passes.

The program runs in the sandbox (never in this process); the sandbox only ever receives the
inputs, and outputs are compared here. Score = passed / tests run, where tests run is
min(len(tests), max_tests): tests the program never reached (budget spent, sandbox killed)
count as failed, so a program cannot shrink the denominator.
"""

from __future__ import annotations

import ast
import functools
from collections import Counter
from dataclasses import dataclass, field

from prime_jax.verifiers.code_compare import returned_matches, stdout_matches
from prime_jax.verifiers.code_tests import extract_code, parse_ground_truth
from prime_jax.verifiers.registry import ItemResult
from prime_jax.verifiers.sandbox import Program, SandboxConfig, check_isolation, run_program

# Modules the sandbox supervisor may import (as root, before forking tests) when a program
# imports them: side-effect-free at import, and worth having warm for each test.
PRELOAD_ALLOWLIST = frozenset(
    {
        "abc",
        "array",
        "bisect",
        "cmath",
        "collections",
        "copy",
        "dataclasses",
        "datetime",
        "decimal",
        "enum",
        "fractions",
        "functools",
        "heapq",
        "io",
        "itertools",
        "json",
        "math",
        "numbers",
        "operator",
        "os",
        "queue",
        "random",
        "re",
        "statistics",
        "string",
        "struct",
        "sys",
        "textwrap",
        "threading",
        "time",
        "typing",
        "unicodedata",
        "numpy",
    }
)


@dataclass(frozen=True)
class CodeConfig:
  """max_tests: tests run per item (the released run used 10). import_prelude: prepend the
  released harness's star-imports (math, collections, ...) to every program."""

  max_tests: int = 10
  import_prelude: bool = True
  sandbox: SandboxConfig = field(default_factory=SandboxConfig)

  def __post_init__(self):
    if self.max_tests < 1:
      raise ValueError(f"CodeConfig.max_tests must be >= 1, got {self.max_tests}")

  @property
  def default_timeout_s(self) -> float:
    """Per-item limit when the caller gives none: every test may use its full time."""
    return self.max_tests * self.sandbox.per_test_timeout_s + self.sandbox.setup_grace_s


def preload_modules(code: str) -> tuple[str, ...]:
  """Allow-listed modules the program imports (for warm starts); () if it does not parse."""
  try:
    tree = ast.parse(code)
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    return ()
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module.split(".")[0])
  return tuple(sorted(names & PRELOAD_ALLOWLIST))


DEFAULT_CODE_CONFIG = CodeConfig()


def score_code(
    response: str, ground_truth: str, timeout_s: float, *, config: CodeConfig = DEFAULT_CODE_CONFIG
) -> ItemResult:
  """Fraction of (at most config.max_tests) test cases passed by the last ```python block.

  timeout_s: wall budget for the whole item, of which config.sandbox.setup_grace_s is kept
  for starting the sandbox.
  Raises ValueError for malformed ground truth and SandboxUnavailableError when the isolation
  cannot be provided (the pool then scores the item 0 and reports the error).
  """
  suite = parse_ground_truth(ground_truth, config.max_tests)
  code = extract_code(response) if isinstance(response, str) else None
  if code is None:
    return ItemResult(0.0, {"no_code": 1, "tests_total": len(suite.inputs)})
  budget = timeout_s - config.sandbox.setup_grace_s
  if budget <= 0:
    raise ValueError(
        f"timeout_s={timeout_s} leaves no time for tests after the sandbox's "
        f"setup_grace_s={config.sandbox.setup_grace_s}"
    )
  program = Program(
      code=code,
      inputs=suite.inputs,
      fn_name=suite.fn_name,
      preload=preload_modules(code),
      import_prelude=config.import_prelude,
  )
  run = run_program(program, config.sandbox, budget_s=budget)
  passed = 0
  for test, expected in zip(run.tests, suite.outputs, strict=True):
    if test.status != "ok":
      continue
    if suite.fn_name is None:
      passed += stdout_matches(test.stdout, expected)
    else:
      passed += returned_matches(test.returned, expected)
  counters = Counter(f"test_{t.status}" for t in run.tests)
  counters.update(
      tests_total=len(run.tests),
      tests_passed=passed,
      sandbox_error=int(run.error is not None),
      oom_kills=run.oom_kills,
  )
  return ItemResult(passed / len(run.tests), dict(counters))


def code_ability_kwargs(config: CodeConfig = DEFAULT_CODE_CONFIG) -> dict:
  """Arguments for `register_ability` that grade code with `config`."""
  return {
      "score_fn": functools.partial(score_code, config=config),
      "timeout_s": config.default_timeout_s,
      "self_timed": True,
      "preflight": functools.partial(check_isolation, config.sandbox),
  }
