"""`python -m prime_jax.tools.plot`: training curves of several runs as one PNG."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from prime_jax.tools import plot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_COLORS = ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0x2C, 0xA0, 0x2C))  # matplotlib C0..C2


def write_run(directory, steps=30, prm=True, eval_every=10, slope=0.01):
  """A metrics.jsonl shaped like prime_jax.train's: eval keys on eval steps only, PRM optional."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
    for step in range(steps + 1):
      row = {"step": step}
      if step:
        row.update(
            {
                "acc_mean": 0.5,
                "rollout/acc_all_samples": 0.3 + slope * step,
                "response_length_mean": 20.0 + step,
                "policy/loss": 0.1,
                "time/step": 1.0,
            }
        )
        if prm:
          row["prm/acc_before"] = 0.5 + slope * step
      if step % eval_every == 0:
        row.update(
            {
                "eval/accuracy_greedy": 0.4 + slope * step,
                "eval/accuracy_sampled": 0.35 + slope * step,
            }
        )
      f.write(json.dumps(row) + "\n")
  return str(directory)


def png_size(path):
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR"
  return struct.unpack(">II", head[16:24])


def color_pixels(path, rgb):
  import matplotlib.image

  image = (matplotlib.image.imread(path)[..., :3] * 255).astype(int)
  return int((np.abs(image - np.array(rgb)).max(axis=-1) <= 12).sum())


def run_cli(*args, cwd=REPO):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run(
      [sys.executable, "-m", "prime_jax.tools.plot", *args],
      cwd=cwd,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
  )


def test_cli_writes_one_png_comparing_runs(tmp_path):
  runs = [
      write_run(tmp_path / "prime"),
      write_run(tmp_path / "rloo", prm=False, slope=0.005),
      write_run(tmp_path / "prime_seed1", slope=0.008),
  ]
  out = tmp_path / "figs" / "curves.png"
  result = run_cli(*runs, f"--out={out}")
  assert result.returncode == 0, result.stderr
  assert f"wrote {out}: 6 panels, 3 runs" in result.stdout
  assert out.stat().st_size > 10_000
  width, height = png_size(out)
  assert (width, height) == (round(3 * 5.2 * 110), round((2 * 3.6 + 0.6) * 110))
  for rgb in RUN_COLORS:  # every run drew its lines, not just a legend entry
    assert color_pixels(out, rgb) > 1000


def test_cli_metrics_flag_selects_panels(tmp_path):
  run = write_run(tmp_path / "a")
  out = tmp_path / "eval.png"
  result = run_cli(run, "--metrics=eval/*,policy/loss", f"--out={out}")
  assert result.returncode == 0, result.stderr
  assert "3 panels, 1 runs" in result.stdout and png_size(out)[0] == round(3 * 5.2 * 110)


@pytest.mark.parametrize("case", ["missing_dir", "no_metrics_file"])
def test_cli_errors_clearly_on_a_bad_run_dir(tmp_path, case):
  good = write_run(tmp_path / "good")
  bad = tmp_path / "bad"
  if case == "no_metrics_file":
    bad.mkdir()
  result = run_cli(good, str(bad), f"--out={tmp_path / 'x.png'}")
  assert result.returncode == 1 and "Traceback" not in result.stderr
  expected = {
      "missing_dir": f"error: run directory '{bad}' does not exist",
      "no_metrics_file": f"error: '{bad}' has no metrics.jsonl (is it a "
      "prime_jax.train --workdir?)",
  }[case]
  assert expected in result.stderr
  assert not (tmp_path / "x.png").exists()


def test_default_panels_skip_metrics_no_run_logs(tmp_path):
  runs = plot.load_runs([write_run(tmp_path / "rloo", prm=False)])
  chosen, missing = plot.select_metrics(runs, None)
  assert "prm/acc_before" not in chosen and missing == ["prm/acc_before"]
  runs = plot.load_runs([write_run(tmp_path / "rloo2", prm=False), write_run(tmp_path / "p")])
  assert plot.select_metrics(runs, None) == (list(plot.DEFAULT_METRICS), [])


def test_metric_patterns_expand_in_order_and_unknown_ones_are_errors(tmp_path):
  runs = plot.load_runs([write_run(tmp_path / "a")])
  chosen, _ = plot.select_metrics(runs, ["policy/loss", "eval/*", "policy/*"])
  assert chosen == ["policy/loss", "eval/accuracy_greedy", "eval/accuracy_sampled"]
  with pytest.raises(plot.PlotError, match="no run logs a metric matching 'evl/\\*'"):
    plot.select_metrics(runs, ["evl/*"])


def test_series_skips_steps_without_a_finite_value():
  rows = [
      {"step": 0, "m": 1.0},
      {"step": 1},
      {"step": 2, "m": None},
      {"step": 3, "m": 2},
      {"step": 4, "m": float("nan")},
      {"step": 5, "m": "text"},
  ]
  assert plot.series(rows, "m") == ([0, 3], [1.0, 2.0])


def test_runs_with_the_same_name_get_their_paths_as_labels(tmp_path):
  dirs = [
      write_run(tmp_path / "x" / "run"),
      write_run(tmp_path / "y" / "run"),
      write_run(tmp_path / "z"),
  ]
  assert list(plot.load_runs(dirs)) == [os.path.normpath(dirs[0]), os.path.normpath(dirs[1]), "z"]


def test_metrics_file_errors(tmp_path):
  run = write_run(tmp_path / "a", steps=3)
  path = os.path.join(run, "metrics.jsonl")
  with open(path, "a") as f:
    f.write('{"step": 4, "acc_mean": 0.')  # a write cut short by a kill: ignored
  assert [r["step"] for r in plot.load_runs([run])["a"]] == [0, 1, 2, 3]
  with open(path, "a") as f:
    f.write("\n")  # now a complete, malformed line
  with pytest.raises(plot.PlotError, match=r"metrics.jsonl:5: not valid JSON"):
    plot.load_runs([run])
  open(path, "w").close()
  with pytest.raises(plot.PlotError, match="holds no steps yet"):
    plot.load_runs([run])
  with pytest.raises(plot.PlotError, match="at least one run directory"):
    plot.load_runs([])


def test_out_must_be_a_png(tmp_path):
  runs = plot.load_runs([write_run(tmp_path / "a")])
  with pytest.raises(plot.PlotError, match=r"\.png"):
    plot.plot_runs(runs, ["acc_mean"], str(tmp_path / "curves.pdf"))
