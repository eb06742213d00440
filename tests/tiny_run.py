"""The tiny arithmetic run the trainer's tests share: a 1-layer model, a small task, 4 prompts x 4
samples per step (config overrides as flattened `section.field` keys)."""

TINY_RUN = {
    "policy.init.hidden_size": 32, "policy.init.num_layers": 1, "policy.init.num_heads": 2,
    "policy.init.num_kv_heads": 1, "policy.init.head_dim": 16, "policy.init.intermediate_size": 64,
    "task.num_train": 500, "task.num_eval": 8, "task.min_ops": 1, "task.max_ops": 2,
    "sft.steps": 30, "sft.batch_size": 16, "sft.lr": 1e-2, "sft.end_lr": 1e-3,
    "sft.warmup_steps": 5, "sft.log_every": 10,
    "eval.num_prompts": 8, "eval.max_new_tokens": 24, "eval.batch_size": 8,
    "rl.batch_prompts": 4, "rl.n_samples": 4, "rl.max_new_tokens": 24,
    "rl.filter_lo": 0.0, "rl.filter_hi": 1.0,
    "rl.mini_batch": 16, "rl.micro_batch": 8, "rl.prm_mini_batch": 16,
    "eval_every": 2,
}
