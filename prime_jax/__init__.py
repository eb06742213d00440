"""prime-jax: PRIME (process reinforcement through implicit rewards) in JAX/Flax."""
