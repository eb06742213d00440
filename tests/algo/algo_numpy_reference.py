"""Plain-loop float64 numpy reference of PRIME's formulas, written from the spec (§2–§5).

Deliberately naive: one response, one group, one token at a time, reading only positions
t < L_i, so it shares no code path (and no vectorisation trick) with prime_jax.algo.
Responses are described by their lengths L_i; `groups(N, n)` lists the row ranges.
"""

import math

import numpy as np


def groups(num_rows, n):
  return [list(range(start, start + n)) for start in range(0, num_rows, n)]


def log_sigmoid(z):
  return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def suffix_sum(values, start, stop, gamma=1.0):
  """Σ_{s=start}^{stop-1} gamma^(s-start) values[s]."""
  return sum(gamma ** (s - start) * values[s] for s in range(start, stop))


# §2 implicit process rewards -------------------------------------------------------------


def implicit_rewards(logp_prm, logp_ref, lengths, granularity="token", beta=None):
  num_rows, width = logp_prm.shape
  out = np.zeros((num_rows, width))
  scale = 1.0 if beta is None else beta
  for i in range(num_rows):
    q = [scale * (float(logp_prm[i, t]) - float(logp_ref[i, t])) for t in range(lengths[i])]
    if granularity == "token":
      out[i, : lengths[i]] = q
    elif lengths[i] > 0:
      out[i, lengths[i] - 1] = sum(q)
  return out


def normalize_process_rewards(scores, lengths, num_shards):
  num_rows, _ = scores.shape
  out = np.zeros(scores.shape)
  rows_per_shard = num_rows // num_shards
  for shard in range(num_shards):
    rows = range(shard * rows_per_shard, (shard + 1) * rows_per_shard)
    biggest = 0.0
    for i in rows:
      for t in range(lengths[i]):
        biggest = max(biggest, abs(suffix_sum(scores[i], t, lengths[i])))
    for i in rows:
      for t in range(lengths[i]):
        out[i, t] = scores[i, t] / (biggest + 1e-6)
  return out


# §3 PRM loss and accuracy ---------------------------------------------------------------


def prm_ce_loss(q, acc, lengths, beta):
  total = 0.0
  for i in range(len(acc)):
    z = beta * sum(float(q[i, t]) for t in range(lengths[i]))
    total += -(acc[i] * log_sigmoid(z) + (1 - acc[i]) * log_sigmoid(-z))
  return total / len(acc)


def prm_dpo_loss(q, acc, lengths, beta, n, q_sum_before=None):
  """The others' Q from q_sum_before (a pass before the update) when given, else from q."""
  reward = [beta * sum(float(q[i, t]) for t in range(lengths[i])) for i in range(len(acc))]
  before = reward if q_sum_before is None else [beta * float(x) for x in q_sum_before]
  total = 0.0
  for group in groups(len(acc), n):
    for i in group:
      if acc[i] > 0:
        chosen = [before[j] for j in group if acc[j] < acc[i]]
        sign = 1.0
      else:
        chosen = [before[j] for j in group if acc[j] > acc[i]]
        sign = -1.0
      other = sum(chosen) / len(chosen) if chosen else 0.0
      total += -log_sigmoid(sign * (reward[i] - other))
  return total / len(acc)


def prm_pair_accuracy(q_sum, acc, n, ties="released"):
  """ties="released": a pair a < b is right iff (q_a − q_b > 0) == (acc_a − acc_b > 0), so a tie
  is right exactly when acc_a < acc_b; ties="wrong": right iff the signs agree."""
  per_group = []
  for group in groups(len(acc), n):
    hit, weight = 0.0, 0.0
    for a_pos, a in enumerate(group):
      for b in group[a_pos + 1 :]:
        if acc[a] == acc[b]:
          continue
        w = abs(acc[a] - acc[b])
        weight += w
        if ties == "released":
          right = (q_sum[a] - q_sum[b] > 0) == (acc[a] - acc[b] > 0)
        else:
          right = np.sign(q_sum[a] - q_sum[b]) == np.sign(acc[a] - acc[b])
        if right:
          hit += w
    per_group.append(hit / weight if weight > 0 else 0.5)
  return sum(per_group) / len(per_group)


# §4 advantages -------------------------------------------------------------------------


def rloo_returns(rewards, reward_mask, n, gamma=1.0, form="code"):
  num_rows, width = rewards.shape
  shaped = np.zeros((num_rows, width))
  for group in groups(num_rows, n):
    means = {}
    for j in group:
      entries = [rewards[j, t] for t in range(width) if reward_mask[j, t]]
      means[j] = sum(entries) / len(entries) if entries else 0.0
    total = sum(means.values())
    for i in group:
      for t in range(width):
        if not reward_mask[i, t]:
          continue
        if form == "code":
          shaped[i, t] = rewards[i, t] * n / (n - 1) - total / (n - 1)
        else:
          shaped[i, t] = rewards[i, t] - (total - means[i]) / (n - 1)
  returns = np.zeros((num_rows, width))
  for i in range(num_rows):
    for t in range(width):
      returns[i, t] = suffix_sum(shaped[i], t, width, gamma)
  return returns


def whiten(values, lengths):
  tokens = [values[i, t] for i in range(len(lengths)) for t in range(lengths[i])]
  mean = sum(tokens) / len(tokens)
  var = sum((x - mean) ** 2 for x in tokens) / (len(tokens) - 1)
  out = np.zeros(values.shape)
  for i in range(len(lengths)):
    for t in range(lengths[i]):
      out[i, t] = (values[i, t] - mean) / math.sqrt(var + 1e-8)
  return out


def outcome_stream(acc, lengths, width):
  rewards = np.zeros((len(acc), width))
  reward_mask = np.zeros((len(acc), width), bool)
  for i, length in enumerate(lengths):
    if length > 0:
      rewards[i, length - 1] = acc[i]
      reward_mask[i, length - 1] = True
  return rewards, reward_mask


def valid_mask(lengths, width):
  return np.array([[t < length for t in range(width)] for length in lengths])


def prime_advantages(
    proc_scores,
    acc,
    lengths,
    n,
    coef_proc=1.0,
    coef_out=1.0,
    gamma_proc=1.0,
    gamma_out=1.0,
    form="code",
):
  width = proc_scores.shape[1]
  valid = valid_mask(lengths, width)
  proc = rloo_returns(proc_scores, valid, n, gamma_proc, form)
  out = rloo_returns(*outcome_stream(acc, lengths, width), n, gamma_out, form)
  returns = np.zeros(proc_scores.shape)
  for i, length in enumerate(lengths):
    for t in range(length):
      returns[i, t] = coef_proc * proc[i, t] + coef_out * out[i, t]
  return whiten(returns, lengths), returns


def reinforce_advantages(proc_scores, acc, lengths, coef_proc, coef_out, gamma_proc, gamma_out):
  out = np.zeros(proc_scores.shape)
  for i, length in enumerate(lengths):
    for t in range(length):
      outcome = gamma_out ** (length - 1 - t) * acc[i]  # acc sits on the last valid token
      out[i, t] = coef_out * outcome + coef_proc * suffix_sum(proc_scores[i], t, length, gamma_proc)
  return out


def _mean_std(values):
  mean = sum(values) / len(values)
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
  return mean, std


def grpo_advantages(proc_scores, acc, lengths, n, coef_proc, coef_out, eps=1e-6, form="stable"):
  out = np.zeros(proc_scores.shape)
  for group in groups(len(acc), n):
    totals = [sum(proc_scores[j, : lengths[j]]) for j in group]
    response_means = [totals[k] / lengths[j] for k, j in enumerate(group)]
    proc_mean, _ = _mean_std(response_means)
    _, proc_std = _mean_std(response_means if form == "paper" else totals)
    acc_mean, acc_std = _mean_std([acc[j] for j in group])
    for i in group:
      normalized = [
          _divide(proc_scores[i, s] - proc_mean, proc_std + eps) for s in range(lengths[i])
      ]
      outcome = _divide(acc[i] - acc_mean, acc_std + eps)
      for t in range(lengths[i]):
        out[i, t] = coef_proc * sum(normalized[t:]) + coef_out * outcome
  return out


def _divide(x, scale):
  """x / scale; 0 for a zero scale (a group without spread and eps = 0)."""
  return x / scale if scale > 0 else 0.0


def gae_advantages(token_rewards, values, lengths, gamma, lam):
  raw = np.zeros(token_rewards.shape)
  returns = np.zeros(token_rewards.shape)
  for i, length in enumerate(lengths):
    running = 0.0
    for t in reversed(range(length)):
      next_value = values[i, t + 1] if t + 1 < length else 0.0
      delta = token_rewards[i, t] + gamma * next_value - values[i, t]
      running = delta + gamma * lam * running
      raw[i, t] = running
      returns[i, t] = running + values[i, t]
  return whiten(raw, lengths), returns


def prm_value_advantages(q, acc, lengths, beta):
  advantages = np.zeros(q.shape)
  for i, length in enumerate(lengths):
    for t in range(length):
      value_of_prefix = beta * sum(q[i, s] for s in range(t))
      advantages[i, t] = acc[i] - value_of_prefix
  return advantages


# §5 policy loss -------------------------------------------------------------------------


def _aggregate(token_losses, agg):
  """token_losses: one list of per-token losses per non-empty sequence."""
  if agg == "token-mean":
    flat = [x for seq in token_losses for x in seq]
    return sum(flat) / len(flat)
  return sum(sum(seq) / len(seq) for seq in token_losses) / len(token_losses)


def ppo_clip_loss(logp, old_logp, advantages, lengths, clip_eps, agg):
  losses, clipped_flags, log_ratios, ratios = [], [], [], []
  for i, length in enumerate(lengths):
    if length == 0:
      continue
    seq = []
    for t in range(length):
      log_ratio = float(logp[i, t]) - float(old_logp[i, t])
      ratio = math.exp(log_ratio)
      a = float(advantages[i, t])
      unclipped = -a * ratio
      clipped = -a * min(max(ratio, 1 - clip_eps), 1 + clip_eps)
      seq.append(max(unclipped, clipped))
      clipped_flags.append(clipped > unclipped)
      log_ratios.append(log_ratio)
      ratios.append(ratio)
    losses.append(seq)
  metrics = {
      "clip_frac": sum(clipped_flags) / len(clipped_flags),
      "approx_kl": -sum(log_ratios) / len(log_ratios),
      "approx_kl_k3": sum(r - 1 - lr for r, lr in zip(ratios, log_ratios)) / len(ratios),
      "ratio_min": min(ratios),
      "ratio_max": max(ratios),
      "ratio_mean": sum(ratios) / len(ratios),
      "ratio_p50": float(np.median(ratios)),
  }
  return _aggregate(losses, agg), metrics


def value_loss(values, returns, lengths, old_values=None, clip_eps=0.5):
  losses = []
  for i, length in enumerate(lengths):
    seq = []
    for t in range(length):
      error = (values[i, t] - returns[i, t]) ** 2
      if old_values is not None:
        low, high = old_values[i, t] - clip_eps, old_values[i, t] + clip_eps
        error = max(error, (min(max(values[i, t], low), high) - returns[i, t]) ** 2)
      seq.append(error)
    if seq:
      losses.append(seq)
  return 0.5 * _aggregate(losses, "token-mean")
