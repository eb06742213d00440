"""The sampler's decode step: the decoder's layers applied one at a time against a per-layer cache.

Training runs the layers under `nn.scan` over params stacked on a `layers` axis. A decode loop
cannot: XLA materialises every slice of a stacked array that feeds a matmul, so a scan inside the
loop copies all weights (and a stacked cache) at every token. Here the layers are unrolled over
separate per-layer params (`split_layers`, sliced once before the loop) and separate per-layer
cache buffers, so a step reads each weight and the filled part of each cache once and writes only
the new token's keys and values. The modules are the decoder's own (`DecoderLayer`, `Decoder.embed`,
`Decoder.head`): one definition for training and sampling.
"""

from __future__ import annotations

import chex
import jax

from prime_jax.models.config import DecoderConfig
from prime_jax.models.decoder import Decoder, DecoderLayer, KVCache, LayerCache, rope_tables


def split_layers(params, config: DecoderConfig) -> list:
  """The stacked `params["layers"]` as one params tree per layer (a copy: do it outside loops)."""
  return [jax.tree.map(lambda a, i=i: a[i], params["layers"]) for i in range(config.num_layers)]


def decode_step(
    params,
    layers: list,
    cache: KVCache,
    tokens: jax.Array,
    slots: jax.Array,
    lengths: jax.Array,
    *,
    config: DecoderConfig,
    block: int,
    impl: str,
) -> tuple[jax.Array, KVCache]:
  """Feeds one token per row and returns the next token's logits.

  Rows use the ragged layout: a row's context starts at slot 0, so a token's slot is its RoPE
  position.

  Args:
    params: the decoder's params (embedding, final norm, head are read from them).
    layers: `split_layers(params, config)`.
    cache: per layer (k, v), each [B, kv_heads, S, head_dim].
    tokens: [B] int, the token each row feeds.
    slots: [B] int, its slot (= position); outside [0, S): not written (idle rows).
    lengths: [B] int, row b attends to slots [0, lengths[b]) (usually slots + 1).
    config: the decoder's config.
    block, impl: see `prime_jax.models.attention.decode_attention`.
  Returns:
    (logits [B, vocab] float32, the updated cache).
  """
  chex.assert_rank([tokens, slots, lengths], 1)
  chex.assert_equal_shape([tokens, slots, lengths])
  model = Decoder(config)
  variables = {"params": params}
  x = model.apply(variables, tokens[:, None], method=Decoder.embed)
  cos, sin = rope_tables(config, slots[:, None])
  layer = DecoderLayer(config)
  new_cache = []
  for layer_params, (k, v) in zip(layers, cache, strict=True):
    x, kv = layer.apply(
        {"params": layer_params},
        x,
        cos,
        sin,
        LayerCache(k, v, slots, lengths, block=block, impl=impl),
    )
    new_cache.append(kv)
  return model.apply(variables, x[:, 0], method=Decoder.head), tuple(new_cache)
