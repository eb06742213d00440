"""Code grading end to end: honest programs get their pass fraction, hostile ones their honest
score (mostly 0), leave no trace, and leave the grader working."""

import dataclasses
import json
import os
import socket
import time

import numpy as np
import pytest
from verifiers_testlib import FAST_SANDBOX, SANDBOX_UID, leaves_of, processes_of_uid

from prime_jax.verifiers import (
    CodeConfig,
    SandboxUnavailableError,
    grade_with_stats,
    register_ability,
)
from prime_jax.verifiers.code_grader import code_ability_kwargs
from prime_jax.verifiers.sandbox import check_isolation

ITEM_TIMEOUT_S = 6.0  # 3 tests x 1 s + setup grace
SUM = json.dumps({"inputs": ["1 2\n", "3 4\n", "10 -5\n"], "outputs": ["3\n", "7\n", "5\n"]})


@pytest.fixture(scope="module", autouse=True)
def fast_code_ability():
  register_ability(
      "code_fast",
      replace=True,
      **code_ability_kwargs(CodeConfig(max_tests=3, sandbox=FAST_SANDBOX)),
  )


def fenced(code: str) -> str:
  return f"Here is my solution.\n```python\n{code}\n```\n"


def grade_code(pool, programs, ground_truths):
  return grade_with_stats(
      "code_fast", [fenced(p) for p in programs], ground_truths, timeout_s=ITEM_TIMEOUT_S, pool=pool
  )


def test_stdin_programs_score_their_pass_fraction(pool):
  programs = [
      "a, b = map(int, input().split())\nprint(a + b)",  # correct
      "a, b = map(int, input().split())\nprint(a * b)",  # wrong
      "a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)",  # 2 of 3
      "a, b = map(int, input().split())\nprint(a + b)\nraise ValueError",  # runtime error
      "print(sum(map(int, open(0).read().split())))",  # other stdin idiom
      "import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))",
      "print(sqrt(4) and sum(map(int, input().split())))",  # released prelude
      "def broken(:\n    pass",  # syntax error
  ]
  scores, stats = grade_code(pool, programs, [SUM] * len(programs))
  np.testing.assert_allclose(scores, [1, 0, 2 / 3, 0, 1, 1, 1, 0], rtol=1e-6)
  assert stats.statuses == ("ok",) * len(programs)
  assert stats.counters["tests_total"] == 3 * len(programs)


def test_call_based_function_and_solution_class(pool):
  two_sum = json.dumps(
      {
          "fn_name": "twoSum",
          "inputs": ["[2,7,11,15]\n9", "[3,2,4]\n6"],
          "outputs": ["[0,1]", "[1,2]"],
      }
  )
  solution = (
      "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
      "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
      "                return [seen[target - x], i]\n            seen[x] = i\n"
  )
  function = (
      "def twoSum(nums, target):\n    return next((i, j) for i in range(len(nums)) "
      "for j in range(i + 1, len(nums)) if nums[i] + nums[j] == target)\n"
  )
  wrong = "def twoSum(nums, target):\n    return [0, 1]\n"
  main_guarded = function + "if __name__ == '__main__':\n    print(input())\n"
  scores, _ = grade_code(pool, [solution, function, wrong, main_guarded], [two_sum] * 4)
  np.testing.assert_allclose(scores, [1, 1, 0.5, 1])


def test_no_code_and_malformed_ground_truth(pool):
  scores, stats = grade_with_stats(
      "code_fast",
      ["no code here", fenced("print(1)")],
      [SUM, "{not json"],
      timeout_s=ITEM_TIMEOUT_S,
      pool=pool,
  )
  np.testing.assert_array_equal(scores, [0, 0])
  assert stats.statuses == ("ok", "error") and stats.counters["no_code"] == 1
  assert "not valid JSON" in stats.errors[0]


def test_max_tests_caps_the_denominator(pool):
  many = json.dumps(
      {"inputs": [f"{i} 0\n" for i in range(20)], "outputs": [f"{i}\n" for i in range(20)]}
  )
  scores, stats = grade_code(pool, ["a, b = map(int, input().split())\nprint(a + b)"], [many])
  assert scores[0] == 1.0 and stats.counters["tests_total"] == 3


ANSWER = json.dumps({"inputs": ["\n"], "outputs": ["3\n"]})
# (name, program, honest score). Programs whose attack fails go on to print the right answer,
# so their honest score is 1: the point is that the attack itself achieved nothing.
HOSTILE = [
    ("infinite_loop", "while True:\n    pass", 0),
    (
        "busy_loop_ignoring_sigterm",
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass",
        0,
    ),
    (
        "fork_bomb",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n" "        pass",
        0,
    ),
    ("memory_bomb", "x = []\nwhile True:\n    x.append(b'x' * (50 << 20))", 0),
    (
        "gigabyte_of_output",
        "import sys\nfor _ in range(1024):\n    sys.stdout.write('3' * (1 << 20))",
        0,
    ),
    (
        "write_outside",
        "import os\nfor p in ['{repo}/PWNED', '/tmp/prime_jax_PWNED', "
        "'/var/tmp/prime_jax_PWNED']:\n    try:\n        open(p, 'w').write('x')\n"
        "    except OSError:\n        pass\nprint(3)",
        1,
    ),
    (
        "read_parent_environment",
        "import glob, os\nleak = 'PRIME_JAX_TEST_SECRET' in os.environ\n"
        "for p in ['/proc/%d/environ' % os.getppid()] + glob.glob('/proc/*/environ'):\n    try:\n"
        "        leak |= b'PRIME_JAX_TEST_SECRET' in open(p, 'rb').read()\n    except OSError:\n"
        "        pass\nprint('LEAK' if leak else 3)",
        1,
    ),
    (
        "socket_to_localhost",
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        "    print('LEAK')\nexcept OSError:\n    print(3)",
        1,
    ),
    (
        "kill_parent",
        "import os, signal\nfor pid in (os.getppid(), 1, -1, {grader}):\n    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
        "print(3)",
        1,
    ),
    ("os_exit_without_flush", "print(3)\nimport os\nos._exit(0)", 0),
    ("os_exit_with_flush", "print(3, flush=True)\nimport os\nos._exit(0)", 1),
    ("os_exit_failure_code", "print(3, flush=True)\nimport os\nos._exit(1)", 0),
    ("print_answer_then_crash", "print(3, flush=True)\nraise RuntimeError('boom')", 0),
    ("close_stdout", "import os\nos.close(1)\nprint(3)", 0),
    (
        "daemon_outliving_the_program",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(60)\n    os._exit(0)\nprint(3)",
        1,
    ),
]


def test_hostile_battery(pool):
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(8)
  server.settimeout(0.1)
  fill = {"repo": repo, "port": server.getsockname()[1], "grader": os.getpid()}
  programs = [
      code.replace("{repo}", fill["repo"])
      .replace("{port}", str(fill["port"]))
      .replace("{grader}", str(fill["grader"]))
      for _, code, _ in HOSTILE
  ]
  start = time.monotonic()
  scores, stats = grade_code(pool, programs, [ANSWER] * len(programs))
  elapsed = time.monotonic() - start
  with pytest.raises(socket.timeout):
    server.accept()
  server.close()
  assert dict(zip([n for n, _, _ in HOSTILE], scores.tolist(), strict=True)) == {
      n: float(s) for n, _, s in HOSTILE
  }
  assert set(stats.statuses) == {"ok"} and stats.counters.get("sandbox_error", 0) == 0
  worker_environ = open(f"/proc/{pool._workers[0].process.pid}/environ", "rb").read()
  assert b"PRIME_JAX_TEST_SECRET=" in worker_environ  # there was something to steal
  assert elapsed < 30
  # no trace on the host
  assert [
      p
      for p in (f"{repo}/PWNED", "/tmp/prime_jax_PWNED", "/var/tmp/prime_jax_PWNED")
      if os.path.exists(p)
  ] == []
  deadline = time.monotonic() + 3
  while processes_of_uid(SANDBOX_UID) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert processes_of_uid(SANDBOX_UID) == []
  worker_pids = [w.process.pid for w in pool._workers]
  assert leaves_of(worker_pids) == []
  # and the grader still works
  again, _ = grade_code(pool, ["a, b = map(int, input().split())\nprint(a + b)"], [SUM])
  assert again[0] == 1.0


def test_default_code_config_matches_the_released_run():
  config = CodeConfig()
  assert config.max_tests == 10 and config.import_prelude
  assert config.sandbox.isolation == "strict"
  assert (
      config.default_timeout_s
      == 10 * config.sandbox.per_test_timeout_s + config.sandbox.setup_grace_s
  )
  with pytest.raises(ValueError, match="max_tests"):
    dataclasses.replace(config, max_tests=0)


def test_grading_code_fails_closed_before_running_anything(pool, monkeypatch):
  monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as if the grader were not root
  check_isolation.cache_clear()
  try:
    with pytest.raises(SandboxUnavailableError, match="rlimits_only"):
      grade_code(pool, ["print(3)"], [ANSWER])
  finally:
    check_isolation.cache_clear()
