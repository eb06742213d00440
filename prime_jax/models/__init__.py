"""The decoder family (policy, reference and implicit PRM) and its Hugging Face checkpoint I/O."""

from prime_jax.models.config import DecoderConfig, RopeScaling
from prime_jax.models.decoder import (
    Decoder,
    init_cache,
    init_params,
    param_logical_axes,
    positions_from_mask,
)
from prime_jax.models.hf_checkpoint import (
    CheckpointError,
    config_from_hf,
    config_to_hf,
    load_hf_checkpoint,
    read_hf_config,
    save_hf_checkpoint,
)
