"""Fixtures for the verifier tests."""

import os

import pytest

from prime_jax.verifiers import WorkerPool

# Planted in the grading workers' environment, which hostile programs then hunt for.
GRADER_SECRET_ENV = "PRIME_JAX_TEST_SECRET"


@pytest.fixture(scope="session")
def pool():
  """Two grading workers shared by the whole session (startup costs ~2 s)."""
  os.environ[GRADER_SECRET_ENV] = "s3cret-token"
  try:
    with WorkerPool(2, hard_grace_s=1.0) as p:
      yield p
  finally:
    del os.environ[GRADER_SECRET_ENV]
