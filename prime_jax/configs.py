"""Config schema: every setting of PRIME (docs/algorithm.md) with its default, as ml-collections
ConfigDicts.

`base_config()` holds the released Eurus-2-7B-PRIME settings; experiment files under
`experiments/configs/` return small overrides of it from `get_config()`. `arithmetic_config()` is
the embedded default: a tiny model trained with PRIME on the built-in synthetic task on a CPU;
`arithmetic_credit_config()` the same run on a variant of the task built so that dense credit
should matter.
ConfigDicts are locked, so a mistyped override (`--config.rl.bta=0.1`) is an error naming the key.
"""

from __future__ import annotations

import ml_collections

ConfigDict = ml_collections.ConfigDict


def _model_config() -> ConfigDict:
  return ConfigDict(
      dict(
          checkpoint="",  # HF checkpoint dir; "" = random init from `init` (small tasks, SFT)
          init=ConfigDict(
              dict(  # DecoderConfig fields used when there is no checkpoint
                  vocab_size=0,  # 0 = the tokenizer's vocab size
                  hidden_size=64,
                  num_layers=4,
                  num_heads=4,
                  num_kv_heads=2,
                  head_dim=16,
                  intermediate_size=192,
                  rms_norm_eps=1e-6,
                  rope_theta=10000.0,
                  qkv_bias=True,
                  tie_embeddings=True,
                  max_position_embeddings=256,
                  model_type="qwen2",
              )
          ),
          dtype="float32",  # compute dtype: float32 | bfloat16 (params stay float32)
          remat="none",  # none | full | dots
      )
  )


def base_config() -> ConfigDict:
  """The released Eurus-2-7B-PRIME run's settings, without model/data paths."""
  c = ConfigDict()
  c.seed = 0
  c.total_steps = 592
  c.eval_every = 16  # greedy validation every k RL steps (0 = never)
  c.ckpt_every = 16
  c.keep_ckpts = 3

  c.policy = _model_config()  # policy = PRM = reference initialisation
  c.prm = ConfigDict(
      dict(
          checkpoint="",  # "" = initialise from the policy's (SFT) checkpoint, as the paper
      )
  )
  c.ref = ConfigDict(
      dict(  # the frozen reference model (rl.ref_type="freeze"): a copy of the
          # initial policy, never trained
          param_dtype="float32",  # float32 | bfloat16: dtype its params are held in (cast once at
          # start; the forward still computes in policy.dtype)
          offload=False,  # hold its params in host memory (memory_kind="pinned_host") and
          # move them to the devices inside the update step, for its forward
      )
  )
  c.tokenizer = ""  # path to tokenizer files; "" = the checkpoint dir / the task's own

  c.task = ConfigDict(
      dict(
          name="eurus",  # eurus | arithmetic
          data_dir="",  # prepared by `python -m prime_jax.data.prepare`
          train_split="train",
          eval_split="validation",
          shuffle=True,  # reshuffle the training prompts every epoch (seeded by config.seed)
          system_prompt="eurus",  # eurus (the action-centric prompt, prime_jax/data/prompts.py) | none
          user_suffix=True,  # append the ability's answer-format suffix (data/prompts.py)
          apply_chat_template=True,
          # math outcome labels (docs/math_grading.md): strict (prime-jax's grader) | released
          # (the released PRIME grader's decisions, quirks included: the labels Eurus-2-7B-PRIME
          # was trained on)
          math_grader="strict",
      )
  )

  c.sft = ConfigDict(
      dict(
          enabled=False,  # start RL from an SFT checkpoint; train it first if missing
          checkpoint="",  # "" = <workdir>/sft
          steps=1000,
          batch_size=64,
          lr=3e-3,
          end_lr=3e-4,
          warmup_steps=50,
          weight_decay=0.01,
          grad_clip=1.0,
          log_every=50,
      )
  )

  c.rl = ConfigDict(
      dict(
          # §1 rollout
          batch_prompts=256,  # B: prompts kept after filtering per step
          n_samples=4,  # n (K in the paper)
          max_prompt_len=1024,
          max_new_tokens=3072,  # T_r
          temperature=1.0,
          top_p=1.0,
          top_k=0,
          filter_lo=0.2,
          filter_hi=0.8,  # keep a group iff lo <= mean acc <= hi (inclusive)
          filter_truncated=False,  # also drop groups in which a response hit T_r
          max_empty_rounds=8,  # refill rounds without a passing group before giving up
          sample_batch_prompts=0,  # prompts drawn per sampling round (0 = batch_prompts)
          # the sampler's engine (prime_jax.sampling, prime_jax.rollout_engine)
          decode_attention="xla",  # xla (pure JAX, any backend) | pallas_gpu (the Pallas GPU
          # decode kernel; GPU only) | pallas_interpret (that kernel interpreted: tests only)
          decode_block=256,  # KV cache slots per attention block: a decode step reads the blocks
          # that hold a written slot of some row, not the whole budget
          partial_rollout_steps=0,  # 0 = off: a sampling round decodes until its longest response
          # ends. k > 0: rounds of at most k decode steps over sample_batch_prompts x n_samples
          # rows; finished groups are graded, unfinished ones keep their rows (and carry into the
          # next RL step, re-prefilled under the new params: each token keeps the log-prob of the
          # params that drew it), freed rows take new prompts. Less idling behind long responses,
          # but a step's batch favours short responses and a carried response mixes two policies
          # §2 implicit process rewards
          process_reward="prm",  # prm: the implicit PRM's q (below) | oracle: the task's own
          # step oracle, -1 on the tokens of a response's first wrong step and 0 elsewhere
          # (prime_jax.oracle_rewards; a built-in task with a step oracle: arithmetic). oracle
          # runs no PRM and no reference, and ignores the PRM fields and reward_scale; granularity,
          # prime_norm and the estimator apply to it as to q: the ceiling of what any PRM could give
          old_logp="recompute",  # recompute (a policy forward in the step) | sampler (reuse
          # the sampler's temperature-1 log-probs; same params, so equal
          # up to float error)
          ref_type="freeze",  # freeze | policy
          granularity="token",  # token | whole
          reward_scale="none",  # none (released code: q itself) | beta (paper: beta * q)
          prime_norm="batch_norm",  # batch_norm | none
          norm_scope="shard",  # shard | global
          norm_shards=8,  # shards of the batch for norm_scope=shard (released run: 8)
          # §3 PRM loss and schedule
          beta=0.05,
          prm_update="after",  # after (single forward) | before (double forward) | none
          # (offline: a trained prm.checkpoint, else every reward is 0)
          prm_loss="ce",  # ce | dpo
          prm_lr=1e-6,
          prm_weight_decay=0.0,
          prm_grad_clip=10.0,
          prm_mini_batch=256,  # responses per PRM optimiser step, not shuffled
          prm_batch_order="strided",  # strided (released: PRM step k takes the k-th block of each
          # of the norm_shards data-parallel shards) | contiguous (the k-th prm_mini_batch rows)
          prm_metrics_after=False,  # re-score after the PRM update to log its after-update loss and
          # accuracy (free with prm_update=before; an extra forward else)
          # §4 advantages
          estimator="rloo",  # rloo | reinforce | grpo | ppo (GAE + value head) | prm_value
          coef_proc=1.0,
          coef_out=1.0,  # coef_proc=0: outcome-only
          gamma_proc=1.0,  # discount of the process stream (released: reward_model_gamma)
          gamma_out=1.0,  # discount of the outcome stream (released: verifier_gamma); rloo and
          # reinforce estimators
          gae_gamma=1.0,  # ppo estimator only: GAE's gamma and lambda (released: algorithm.gamma,
          gae_lambda=1.0,  # algorithm.lam)
          rloo_form="code",  # code | paper
          whiten_advantages=True,  # whiten every estimator's advantages over the batch's valid
          # tokens (the released RLOO pipeline's last step), so all Table 4 rows share it
          grpo_form="stable",  # stable | paper (Eq. 7, whose process term grows with the
          # response length); grpo estimator only, docs/estimators.md
          # §5 policy loss
          clip_eps=0.2,
          loss_agg="seq-mean-token-mean",  # seq-mean-token-mean | token-mean
          entropy_coef=0.0,
          kl_coef=0.0,
          ppo_epochs=1,
          mini_batch=256,  # responses per policy optimiser step (shuffled)
          micro_batch=8,  # responses per forward/backward (gradient accumulation)
          lr=5e-7,
          weight_decay=0.01,
          grad_clip=1.0,
          value_coef=0.1,  # ppo estimator: weight of the value loss (value head shares
          value_clip_eps=0.2,  # the policy trunk, as TRL's PPO) and its clip range
          score_chunk=512,  # tokens per chunk when turning hidden states into log-probs
      )
  )

  c.eval = ConfigDict(
      dict(
          num_prompts=0,  # 0 = the whole held-out split
          max_new_tokens=3072,
          batch_size=64,
          prm_credit_pairs=0,  # held-out correct / one-mistake response pairs the PRM's process
          # credit is measured on at every eval (`prm_credit/*`, prime_jax.prm_credit), built
          # once from the eval split; used when the run has a PRM and its task can build pairs
          # (the built-in arithmetic task); 0 = off
      )
  )

  c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.sharding_rules = ()  # ((logical axis, mesh axes), ...) for params, optimiser states,
  # batches and activations; () = prime_jax.sharding.DEFAULT_RULES
  c.sampler_rules = ()  # the sampler's layout of the same params (resharded device to
  # device before each rollout), its KV cache and activations;
  # () = sharding_rules. prime_jax.sharding.DECODE_RULES replicates
  # params over fsdp and keeps tensor parallelism
  return c


def arithmetic_config() -> ConfigDict:
  """The embedded default: PRIME on the synthetic arithmetic task, a ~200k-param model, CPU."""
  c = base_config()
  # 30 RL steps keep the whole run (SFT included) within 8 min on a 2-core CPU (README; 45 steps
  # took 9:12 there, the later steps slower as the sharper policy needs more sampling rounds).
  c.total_steps = 30
  c.eval_every = 15
  c.ckpt_every = 15
  # Single-digit values and 15 % demonstration mistakes: the margin (README "The default run").
  # With values up to 99 the SFT model learnt the carries and the late operands at a
  # seed-dependent step, and 3 of 10 seeds missed the band at 1,000 steps (up to 49: seed 0 at
  # greedy 0.48); up to 9 every seed's loss reaches the floor set by the demonstrations'
  # mistakes by step 550 of 1,000, so T=1 samples err as the demonstrator does (RL's job) and the
  # greedy answer is right. 15 % (not 10 %) keeps the filter's pass rate well above 0.5.
  c.task = ConfigDict(
      dict(
          name="arithmetic",
          min_ops=2,
          max_ops=4,  # operations per expression
          max_value=9,  # values stay in 0..max_value (zero-padded to the digits of max_value)
          mul_min=2,
          mul_max=5,  # `*` operands
          mistake_rate=0.15,  # step mistakes in SFT demonstrations
          free_order=False,  # demonstrations write `+` / `*` operands in a random order
          step_labels=False,  # letter the steps in prompt and response (`;B*02` / `B12*02=24`)
          num_train=20000,
          num_eval=256,
          system_prompt="none",
          user_suffix=False,
          apply_chat_template=False,
          data_dir="",
          train_split="train",
          eval_split="validation",
          shuffle=True,
      )
  )
  c.sft.enabled = True
  # The released run's shape at 1/4 scale: 64 prompts x 4 samples, 4 PRM and 4 policy optimiser steps
  # per RL step. Learning rates from a sweep on this task (see the README's default-run section):
  # at lr = prm_lr = 1e-4 the policy outran the PRM (PRM pair accuracy on fresh rollouts fell to
  # 0.35-0.45) and greedy accuracy collapsed; the PRM learning 10x faster than the policy (the
  # paper's ratio is 2x at 7B) keeps RL improving.
  c.rl.update(
      dict(
          batch_prompts=64,
          n_samples=4,
          max_prompt_len=32,
          max_new_tokens=48,
          norm_shards=1,
          prm_mini_batch=64,
          mini_batch=64,
          micro_batch=64,
          lr=3e-5,
          prm_lr=3e-4,
          # beta from the PRM's own diagnostics, not from RL outcomes (README "Choosing beta"):
          # Σq <= NLL_ref(y), and correct responses here have a median NLL_ref of 0.57 nats, so at
          # the 7B run's 0.05 the PRM's P(correct) is capped at 0.51 and it cannot say "correct".
          # beta = 3 is the smallest of 0.05 / 0.3 / 1 / 3 that lifts the cap above 0.75 (0.85);
          # with the policy frozen its PRM localises injected mistakes at 0.98 after 12 steps, as
          # at beta = 1 (chance 0.25).
          beta=3.0,
      )
  )
  c.eval.update(dict(num_prompts=256, max_new_tokens=48, batch_size=256, prm_credit_pairs=128))
  c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c


def arithmetic_credit_config() -> ConfigDict:
  """`arithmetic_config()` on a variant of its task where dense credit should matter.

  At the default task's scale PRIME equalled outcome-only RLOO (measured with two-digit values):
  chains of 2-4 steps (~30 tokens; ~21 with single digits), and a group's 4 samples share most of
  their prefix, so outcome RLOO already credits the steps where samples diverge. Here chains are
  6-8 steps (~45 response tokens; ~75 with two digits), `free_order` writes the operands of `+` /
  `*` in a random order (outcome-irrelevant tokens: samples stop sharing prefixes), and
  demonstrations err at 5 % of steps instead of 15 % so that SFT still lands in a band where the
  online filter keeps groups (about 30 % of 7-step demonstrations end wrong; the default's 3 steps
  x 15 % about 35 %). Everything else, SFT length, model size and the values' range included, is
  the default's, so re-tuning that carries over. `rl.process_reward="oracle"` on this base is the
  ceiling of what any PRM could give (experiments/variants.py: `oracle`).
  """
  c = arithmetic_config()
  c.task.update(dict(min_ops=6, max_ops=8, free_order=True, mistake_rate=0.05))
  # With two-digit values (`--config.task.max_value=99`) prompts are `a=NN` + 8 x `;opNN` + `=`
  # (37 characters, plus BOS and a newline) and responses 8 lines of 9 characters, the box (4
  # tokens) and EOS: 77 tokens at most; the default's single digits need fewer.
  c.rl.update(dict(max_prompt_len=48, max_new_tokens=96))
  c.eval.update(dict(max_new_tokens=96))
  return c
