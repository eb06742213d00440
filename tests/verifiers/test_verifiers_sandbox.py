"""Sandbox isolation and resource caps, checked on the raw outputs of hostile programs.

Safety order: every fork-bomb test first proves, with a harmless program (200 `sleep 1`
children), that the process cap holds in that configuration, and only then runs the bomb.
"""

import dataclasses
import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from verifiers_testlib import FAST_SANDBOX, SANDBOX_UID, leaves_of, processes_of_uid

from prime_jax.verifiers import cgroups, sandbox
from prime_jax.verifiers.sandbox import (
    Program,
    SandboxConfig,
    SandboxUnavailableError,
    check_isolation,
    run_program,
)

RLIMITS_ONLY = dataclasses.replace(FAST_SANDBOX, isolation="rlimits_only")
# The Python install here is not readable by the sandbox uid, so rlimits_only programs can
# only use modules the supervisor preloads (see docs/verifiers.md).
PRELOAD = ("os", "signal", "socket", "encodings.idna", "subprocess", "threading", "time", "glob")


def run(code, config=FAST_SANDBOX, inputs=("",), budget_s=3.0):
  return run_program(
      Program(code=code, inputs=tuple(inputs), preload=PRELOAD), config, budget_s=budget_s
  )


@pytest.fixture(autouse=True)
def leaves_nothing_behind():
  """After every test: no process of the sandbox uid and no cgroup leaf of ours is left."""
  yield
  deadline = time.monotonic() + 3.0
  while processes_of_uid(SANDBOX_UID) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert processes_of_uid(SANDBOX_UID) == []
  assert leaves_of([os.getpid()]) == []


SLEEPERS = """
import subprocess
started = refused = 0
children = []
for _ in range(200):
    try:
        children.append(subprocess.Popen(["sleep", "1"]))
        started += 1
    except OSError:
        refused += 1
print(started, refused)
"""


def assert_process_cap(config):
  """Harmless proof that `config` caps processes: most of 200 `sleep 1` children are refused."""
  run_ = run(SLEEPERS, config, budget_s=5.0)
  assert run_.tests[0].status == "ok", run_.tests[0].stderr
  started, refused = map(int, run_.tests[0].stdout.split())
  assert started + refused == 200
  assert started < config.max_processes, f"cap of {config.max_processes} not enforced"
  assert refused > 200 - config.max_processes


@pytest.mark.parametrize("config", [FAST_SANDBOX, RLIMITS_ONLY], ids=["strict", "rlimits_only"])
def test_process_cap_refuses_extra_children(config):
  assert_process_cap(config)


FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""


@pytest.mark.parametrize("config", [FAST_SANDBOX, RLIMITS_ONLY], ids=["strict", "rlimits_only"])
def test_fork_bomb_is_contained_and_cleaned_up(config):
  assert_process_cap(config)  # never run a bomb unless the cap is proven right here
  start = time.monotonic()
  run_ = run(FORK_BOMB, config)
  assert run_.tests[0].status == "timeout" and run_.error is None
  assert time.monotonic() - start < 8.0


def test_thread_bomb_is_capped():
  code = (
      "import threading, time\nn = 0\ntry:\n    while True:\n"
      "        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()\n"
      "        n += 1\nexcept RuntimeError:\n    print(n)\n"
  )
  run_ = run(code)
  assert run_.tests[0].status == "ok"
  assert int(run_.tests[0].stdout) < FAST_SANDBOX.max_processes


# Touching hundreds of MiB can take seconds on a loaded machine: give memory bombs more time.
SLOW_SANDBOX = dataclasses.replace(FAST_SANDBOX, per_test_timeout_s=5.0)


def test_memory_bomb_in_one_process_hits_address_space_limit():
  run_ = run("x = []\nwhile True:\n    x.append(b'x' * (50 << 20))\n", SLOW_SANDBOX, budget_s=6.0)
  assert run_.tests[0].status == "runtime_error"
  assert "MemoryError" in run_.tests[0].stderr


def test_memory_bomb_across_processes_hits_the_sandbox_memory_cgroup():
  # 8 x 300 MiB: each child is under RLIMIT_AS, together they exceed the 512 MiB cgroup.
  code = (
      "import os, signal, time\nfor _ in range(8):\n    if os.fork() == 0:\n"
      "        block = b'x' * (300 << 20)\n        time.sleep(1)\n        os._exit(0)\n"
      "statuses = [os.wait()[1] for _ in range(8)]\n"
      "print(sum(os.WIFSIGNALED(s) and os.WTERMSIG(s) == signal.SIGKILL\n"
      "          for s in statuses))\n"
  )
  run_ = run(code, SLOW_SANDBOX, budget_s=6.0)
  assert run_.error is None and run_.tests[0].status == "ok"
  assert run_.oom_kills >= 1 and int(run_.tests[0].stdout) == run_.oom_kills


def test_gigabyte_of_output_is_cut_at_the_cap():
  start = time.monotonic()
  run_ = run(
      "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n" "    sys.stdout.write(chunk)\n"
  )
  assert run_.tests[0].status == "output_limit"
  assert len(run_.tests[0].stdout) == FAST_SANDBOX.max_stdout_bytes
  assert time.monotonic() - start < 5.0


def test_filling_the_working_directory_is_bounded():
  run_ = run(
      "f = open('big', 'wb')\ntry:\n    while True:\n        f.write(b'x' * (1 << 20))\n"
      "except OSError as e:\n    print(e.errno)\n"
  )
  assert run_.tests[0].status == "ok"
  assert int(run_.tests[0].stdout) == errno.EFBIG  # RLIMIT_FSIZE before the tmpfs fills


def test_no_network_not_even_loopback():
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(1)
  server.settimeout(0.2)
  port = server.getsockname()[1]
  code = (
      f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), "
      f"timeout=1).sendall(b'x')\n    print('connected')\n"
      f"except OSError as e:\n    print(e.errno)\n"
  )
  run_ = run(code)
  with pytest.raises(socket.timeout):
    server.accept()
  server.close()
  assert run_.tests[0].stdout.strip() == str(errno.ENETUNREACH)


def test_environment_is_fixed_and_grader_secrets_unreachable(monkeypatch):
  secret = "prime-jax-test-secret-7f3a"
  monkeypatch.setenv("PRIME_JAX_TEST_SECRET", secret)  # the grader's environment
  code = (
      "import glob, json, os\nseen = {'env': dict(os.environ), 'files': {}}\n"
      "for p in ['/proc/%d/environ' % os.getppid()] + glob.glob('/proc/*/environ'):\n"
      "    try:\n        seen['files'][p] = open(p, 'rb').read().decode()\n"
      "    except OSError as e:\n        seen['files'][p] = e.errno\n"
      "print(json.dumps(seen))\n"
  )
  run_ = run(code)
  assert run_.tests[0].status == "ok"
  assert secret not in run_.tests[0].stdout
  seen = json.loads(run_.tests[0].stdout)
  assert seen["env"] == dict(FAST_SANDBOX.env, HOME="/tmp")
  assert seen["files"]["/proc/1/environ"] == errno.ENOENT  # its parent: init, hidden


def test_host_filesystem_is_hidden_and_writes_go_nowhere(tmp_path):
  marker = tmp_path / "host_file"
  marker.write_text("secret ground truth")
  targets = [
      str(tmp_path / "pwned"),
      "/tmp/prime_jax_pwned",
      "/work/prime_jax_pwned",
      "/var/tmp/prime_jax_pwned",
      "/dev/shm/prime_jax_pwned",
      "/usr/prime_jax_pwned",
      os.path.join(os.path.dirname(sandbox.__file__), "pwned.py"),
  ]
  code = (
      f"import json\nresult = {{}}\ntry:\n    result['read'] = open({str(marker)!r}).read()\n"
      f"except OSError as e:\n    result['read'] = e.errno\n"
      f"for p in {targets!r}:\n    try:\n        open(p, 'w').write('x')\n"
      f"        result[p] = 'written'\n"
      f"    except OSError as e:\n        result[p] = e.errno\n"
      f"print(json.dumps(result))\n"
  )
  run_ = run(code)
  result = json.loads(run_.tests[0].stdout)
  assert result["read"] == errno.ENOENT
  assert [p for p in targets if os.path.exists(p)] == []  # nothing reached the host
  # Inside, only its own tmpfs (/tmp, /dev/shm -> /tmp) is writable.
  assert {p for p, r in result.items() if r == "written"} <= {
      "/tmp/prime_jax_pwned",
      "/dev/shm/prime_jax_pwned",
  }


def test_program_runs_unprivileged_without_new_privileges():
  code = (
      "import os\nstatus = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
      "print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups(), "
      "status['NoNewPrivs'].strip(), status['CapEff'].strip(), os.getcwd())\n"
  )
  run_ = run(code)
  assert run_.tests[0].stdout.split() == [
      "65534",
      "65534",
      "65534",
      "[]",
      "1",
      "0000000000000000",
      "/tmp",
  ]


def test_cannot_kill_the_supervisor_or_the_grader():
  code = (
      "import os, signal\nfor pid in (os.getppid(), 1, -1, int(input())):\n    try:\n"
      "        os.kill(pid, signal.SIGKILL)\n        print('killed', pid)\n"
      "    except OSError as e:\n        print('refused', pid, e.errno)\n"
  )
  run_ = run(code, inputs=[f"{os.getpid()}\n", "1\n"])
  for test in run_.tests:  # both tests ran: the supervisor survived the first
    assert test.status == "ok"
    assert "killed" not in test.stdout.replace("killed -1", "")
  assert run("print(3)").tests[0].stdout == "3\n"


@pytest.mark.parametrize("config", [FAST_SANDBOX, RLIMITS_ONLY], ids=["strict", "rlimits_only"])
def test_daemon_that_outlives_the_program_is_killed(config):
  code = (
      "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
      "        time.sleep(30)\n    os._exit(0)\nprint(3)\n"
  )
  run_ = run(code, config)
  assert run_.tests[0].stdout == "3\n"
  # leaves_nothing_behind checks no process of the sandbox uid survives


def test_busy_loop_ignoring_signals_times_out():
  code = (
      "import signal\nfor s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT, "
      "signal.SIGHUP):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n"
  )
  start = time.monotonic()
  run_ = run(code)
  assert run_.tests[0].status == "timeout"
  assert time.monotonic() - start < FAST_SANDBOX.per_test_timeout_s + 4.0


@pytest.mark.parametrize(
    "code, status, stdout",
    [
        ("print(3)\nimport os\nos._exit(0)\n", "ok", ""),  # unflushed output is lost, as on a judge
        ("print(3, flush=True)\nimport os\nos._exit(0)\n", "ok", "3\n"),
        ("print(3, flush=True)\nraise SystemExit(1)\n", "runtime_error", "3\n"),
        ("import os\nos.close(1)\nprint(3)\n", "ok", ""),
        ("import sys\nsys.exit(0)\n", "ok", ""),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", "signaled", ""),
    ],
    ids=[
        "exit_unflushed",
        "exit_flushed",
        "print_then_crash",
        "close_stdout",
        "sys_exit",
        "segfault",
    ],
)
def test_exit_tricks_report_what_actually_happened(code, status, stdout):
  test = run(code).tests[0]
  assert (test.status, test.stdout) == (status, stdout)


def test_tests_beyond_the_budget_are_not_run():
  run_ = run("while True:\n    pass\n", inputs=["", "", ""], budget_s=1.5)
  assert [t.status for t in run_.tests] == ["timeout", "timeout", "not_run"]


def test_only_inputs_enter_the_sandbox_and_each_test_gets_its_own():
  run_ = run("print(input()[::-1])", inputs=["abc\n", "xyz\n"])
  assert [t.stdout for t in run_.tests] == ["cba\n", "zyx\n"]


def test_call_based_program_returns_json():
  program = Program(
      code="class Solution:\n    def f(self, a, b):\n        return (a + b, {a})\n",
      inputs=([1, 2], [3, 4]),
      fn_name="f",
  )
  run_ = run_program(program, FAST_SANDBOX, budget_s=3.0)
  assert [json.loads(t.returned) for t in run_.tests] == [[3, [1]], [7, [3]]]


def test_config_rejects_root_uid_and_unknown_isolation():
  with pytest.raises(ValueError, match="root"):
    SandboxConfig(uid=0)
  with pytest.raises(ValueError, match="isolation"):
    SandboxConfig(isolation="none")
  with pytest.raises(ValueError, match="max_processes"):
    SandboxConfig(max_processes=2)


def test_fails_closed_without_root(monkeypatch):
  monkeypatch.setattr(os, "geteuid", lambda: 1000)
  check_isolation.cache_clear()
  try:
    with pytest.raises(SandboxUnavailableError, match="needs root.*rlimits_only"):
      check_isolation(FAST_SANDBOX)
  finally:
    check_isolation.cache_clear()


def test_fails_closed_without_cgroups(monkeypatch, tmp_path):
  monkeypatch.setattr(cgroups, "CGROUP_ROOT", str(tmp_path))
  check_isolation.cache_clear()
  try:
    with pytest.raises(SandboxUnavailableError, match="cgroup"):
      check_isolation(FAST_SANDBOX)
  finally:
    check_isolation.cache_clear()


def test_fails_closed_when_the_supervisor_cannot_isolate(monkeypatch, tmp_path):
  monkeypatch.setattr(
      cgroups.SandboxCgroup,
      "procs_files",
      property(lambda self: [str(tmp_path / "missing" / "cgroup.procs")]),
  )
  with pytest.raises(SandboxUnavailableError, match="setup failed"):
    run_program(Program("print(1)", ("",)), FAST_SANDBOX, budget_s=2.0, _checked=True)


def test_grader_killed_mid_run_leaves_nothing_after_sweep():
  """A grading worker killed while its program runs (the pool does this to hung workers):
  the supervisor dies with it (PDEATHSIG), the namespace with the supervisor, and
  `sweep_stale` removes the dead worker's cgroup leaves."""
  script = (
      "import sys\nfrom prime_jax.verifiers.sandbox import Program, SandboxConfig, "
      "run_program\nprint('started', flush=True)\n"
      "run_program(Program('import os\\nos.fork()\\nwhile True: pass', ('',)), "
      "SandboxConfig(per_test_timeout_s=30), budget_s=30)\n"
  )
  worker = subprocess.Popen(
      [sys.executable, "-c", script],
      stdout=subprocess.PIPE,
      text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
  )
  assert worker.stdout.readline() == "started\n"
  deadline = time.monotonic() + 10
  while len(processes_of_uid(SANDBOX_UID)) < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
  assert len(processes_of_uid(SANDBOX_UID)) == 2  # the program and its child are running
  worker.kill()
  worker.wait()
  cgroups.sweep_stale()
  assert leaves_of([worker.pid]) == []
  # leaves_nothing_behind: the program and its child died with the supervisor


def test_unprivileged_process_count_includes_threads():
  assert sandbox._tasks_of_uid(os.getuid()) >= threading.active_count()


def test_python_installation_under_tmp_stays_visible(monkeypatch, tmp_path):
  """CI's venv lives in /tmp, which is also where the program's working directory goes."""
  venv = tmp_path / "venv"
  (venv / "lib").mkdir(parents=True)
  (venv / "lib" / "marker.py").write_text("VALUE = 42\n")
  dirs = sandbox._python_dirs()
  monkeypatch.setattr(sandbox, "_python_dirs", lambda: dirs + [str(venv)])
  code = (
      f"import sys\nsys.path.insert(0, {str(venv / 'lib')!r})\nimport marker\n"
      f"open('/tmp/scratch', 'w').write('ok')\n"
      f"print(marker.VALUE, open('/tmp/scratch').read())\n"
      f"try:\n    open({str(venv / 'lib' / 'x')!r}, 'w')\nexcept OSError as e:\n"
      f"    print(e.errno)\n"
  )
  assert run(code).tests[0].stdout.split() == ["42", "ok", str(errno.EROFS)]
