"""`experiments/run_table.py`'s parts, by job: `definitions` (the tables, their variants and the
paper's numbers), `runs` (planning and running the trainer / eval subprocesses, resuming finished
runs), `render` (results.md and curves.png from the runs' metrics)."""
