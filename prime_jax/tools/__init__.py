"""Command-line tools for Hugging Face checkpoint directories.

python -m prime_jax.tools.generate ...   sample responses (see generate.py)
python -m prime_jax.tools.score ...      per-token log-probs of given responses (see score.py)
"""
