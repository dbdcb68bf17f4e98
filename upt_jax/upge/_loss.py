"""The loss builder: turns a `Recipe` and a batch into ``(loss_sums, denominators, metrics)``.

Two stages, so that micro-batching and sharding never change the result:

1. `prepare` (no parameters, whole batch): everything that needs group or batch
   statistics — advantages, KL-in-reward, gates. Its outputs are ``[B, ...]``
   arrays added to the batch.
2. `compute_loss` (differentiated, row-local): stabilisers, references, the
   surrogate and its aggregation. Each term returns a sum and a denominator
   that add up over any split of the batch into whole groups.

Batch keys (all ``[B, ...]``; only those a recipe uses are needed):

| key | shape | used by |
|---|---|---|
| ``mask`` | ``[B, T]`` | always |
| ``rewards`` | ``[B]`` | RL advantages, gates |
| ``old_logp`` | ``[B, T]`` | ``behaviour`` / ``gspo`` references, clips, KL in reward |
| ``ref_logp`` | ``[B, T]`` | KL to the reference model; DPO/IPO reference |
| ``values`` | ``[B, T]`` | GAE |
| ``baseline_rewards`` | ``[B]`` | ReMax |
| ``teacher_logp`` | ``[B, T]`` | on-policy distillation |
| ``teacher_logits`` | ``[B, T, V]`` | forward-KL distillation (then ``logp`` is ``[B, T, V]``) |
| ``rollout_logp`` | ``[B, T]`` | TIS / IcePop (sampler log-probs) |
| ``entropy`` | ``[B, T]`` | SRFT weights (stop-gradient; else `compute_loss`'s ``entropy``) |
| ``is_demo`` | ``[B]`` bool | rows that are demonstrations (default: none) |

For demonstration rows ``old_logp`` may hold any finite value (e.g. 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from upt_jax.upge import _advantages as adv_lib
from upt_jax.upge import _aggregation
from upt_jax.upge import _distill
from upt_jax.upge import _gates
from upt_jax.upge import _needs
from upt_jax.upge import _preference
from upt_jax.upge import _references as ref_lib
from upt_jax.upge import _regularisers as reg
from upt_jax.upge import _stabilisers as stab_lib
from upt_jax.upge._common import broadcast_to_tokens, group_view, masked_mean, safe_div, sg
from upt_jax.upge._objective import (
    OBJECTIVE_VALUES,
    STABILISER_VALUES,  # noqa: F401
    _value_weight,
    objective_terms,
)
from upt_jax.upge._parts import Part, Recipe, Term
from upt_jax.upge._surrogate import token_metrics, upge_token_terms
from upt_jax.upge._part_tables import (
    ADVANTAGES,
    GATE_PARTS,
    REFERENCES,
    STABILISERS,  # noqa: F401
    PartContext,
)

# ----------------------------------------------------------------------------
# Stage 1: prepare (batch-global, parameter-free).
# ----------------------------------------------------------------------------


def _key(term: Term, role: str, what: str) -> str:
    return f"upge/{term.name}/{role}/{what}"


def _role_rows(batch, role, b):
    demo = jnp.asarray(batch.get("is_demo", jnp.zeros((b,), bool))).astype(bool)
    return (demo if role == "demo" else ~demo).astype(jnp.float32)


def _term_rewards(term: Term, c: PartContext):
    """Sequence and token rewards of a term (with the KL penalty folded in if asked)."""
    if "rewards" not in c.batch:
        return None, None
    r = jnp.asarray(c.batch["rewards"], jnp.float32)
    if term.kl is not None and term.kl.where == "reward":
        tok = reg.kl_penalised_rewards(r, c.get("old_logp"), c.get("ref_logp"), c.mask, term.kl.coef, term.kl.kind)
        return jnp.sum(tok, axis=-1), tok
    return r, adv_lib.last_token_rewards(r, c.mask)


def prepare(recipe: Recipe, batch: dict, *, group_size: int = 1, logp: jax.Array | None = None):
    """Stage 1: batch-global, parameter-free quantities (advantages, gates).

    Math: ``Â = estimator(rewards, groups, ...)`` (e.g. ``(r − μ_g)/(σ_g + ε)``),
    ``g_i = gate(P_q(i))`` with ``P_q`` the pass rate of row ``i``'s question;
    with KL in the reward, ``r_{i,t} = r_i 1[t = last] − β k_{i,t}`` first.

    Computes, for every term and row kind, the advantages ``[B, T]`` (or
    ``[B, T, V]``) of policy-independent estimators and the gate weights ``[B]``,
    and stores them in a copy of the batch under ``'upge/<term>/<role>/adv'`` and
    ``'.../gate'``. Advantages are computed over the rows of the term that use
    the same estimator (LUFFY: the union of rollouts and the demonstration), or
    over every row of the group when the advantage part has ``rows='all'``.
    Split the returned batch (along whole groups) into micro-batches freely.

    Args:
      recipe: the `Recipe`.
      batch: dict of ``[B, ...]`` arrays (see the module docstring).
      group_size: rows per question ``G`` (2 for preference pairs).
      logp: ``[B, T]`` the current policy's log-probs (no gradient), for batch statistics that
        read the policy (Clip-Cov's and KL-Cov's covariances); ``None``: those use
        ``old_logp``, the policy's own at a step's first update.

    Returns:
      ``(prepared_batch, metrics)``; metrics hold ``<term>/zero_var_frac`` and
      ``<term>/pass_rate`` where they apply.
    """
    out = dict(batch)
    metrics = {}
    mask = jnp.asarray(batch["mask"], jnp.float32)
    b = mask.shape[0]
    for term in recipe.terms:
        c = PartContext(batch, logp, group_size)
        c.rewards, c.token_rewards = _term_rewards(term, c)
        roles = term.roles()
        for role, parts in roles:
            fn, needs_policy = ADVANTAGES[parts.advantage.name]
            if not needs_policy:
                kw = parts.advantage.kw
                if kw.pop("rows", "term") == "all":
                    # group statistics over every row of the group (SRFT's demo term)
                    c.rows = jnp.ones((b,), jnp.float32)
                else:
                    # rows of every role of this term that use the same estimator
                    c.rows = sum(_role_rows(batch, r, b) for r, p in roles if p.advantage == parts.advantage)
                a = fn(c, **kw)
                out[_key(term, role, "adv")] = broadcast_to_tokens(a, mask)
                if _needs.group_baseline(parts.advantage.name, kw):  # a reward baseline over the group
                    metrics[f"{term.name}/zero_var_frac"] = adv_lib.zero_variance_fraction(
                        c.rewards, group_size, c.rows
                    )
            if parts.gate is not None:
                g = GATE_PARTS[parts.gate.name](c, **parts.gate.kw)
                out[_key(term, role, "gate")] = g
                metrics[f"{term.name}/{role}/gate_mean"] = jnp.mean(g)
    return out, metrics


def _is_prepared(recipe: Recipe, batch: dict) -> bool:
    for term in recipe.terms:
        for role, parts in term.roles():
            if not ADVANTAGES[parts.advantage.name][1] and _key(term, role, "adv") not in batch:
                return False
            if parts.gate is not None and _key(term, role, "gate") not in batch:
                return False
    return True


# ----------------------------------------------------------------------------
# Stage 2: the differentiated, row-local loss.
# ----------------------------------------------------------------------------


def term_loss(term: Term, logp: jax.Array, batch: dict, *, group_size: int = 1, entropy: jax.Array | None = None):
    """``(loss_sum, denominator, metrics)`` of one `Term` on a prepared batch.

    Math, for each row kind ``k`` of the term with parts ``(1_stable, π_ref, Â, w)``
    and gate ``g``:

        S = coef · Σ_k Σ_{i∈k,t} g_i w_{i,t} [ −sg(1_stable Â) exp(log π_θ − sg(log π_ref))
                                               + β k_KL(t) − c_H H_t ]
        D = Σ_k Σ_{i∈k} 1[g_i > 0] d_i

    Args:
      term: the `Term`.
      logp: ``[B, T]`` (or ``[B, T, V]``) current log-probs, differentiated.
      batch: prepared batch (see `prepare`).
      group_size: rows per question (preference pairs: 2).
      entropy: ``[B, T]`` differentiable token entropies (for the entropy bonus).

    The term's objective value (what the method minimises, e.g. the NLL for SFT, the clipped
    PPO objective, the DPO loss; see `objective_terms`) is aggregated the same way, with the
    same ``D``: ``metrics['objective_sum/<term>']`` is its sum ``S^obj`` (no gradient).

    Returns:
      ``(loss_sum [], denominator [], metrics)``.
    """
    mask = jnp.asarray(batch["mask"], jnp.float32)
    b = mask.shape[0]
    c = PartContext(batch, logp, group_size, entropy)
    total = jnp.zeros((), jnp.float32)
    objective = jnp.zeros((), jnp.float32)
    denom = jnp.zeros((), jnp.float32)
    metrics = {}
    vocab_level = jnp.ndim(logp) > 2
    for role, parts in term.roles():
        rows = _role_rows(batch, role, b)
        fn, needs_policy = ADVANTAGES[parts.advantage.name]
        c.row_objective = c.pair_margin = None
        if needs_policy:
            c.rows = rows
            a = broadcast_to_tokens(fn(c, **parts.advantage.kw), mask)
        else:
            a = batch[_key(term, role, "adv")]
        c.adv = sg(a)
        gate = batch[_key(term, role, "gate")] if parts.gate is not None else jnp.ones((b,))
        g = sg(jnp.asarray(gate, jnp.float32)) * rows
        ref = REFERENCES[parts.reference.name](c, **parts.reference.kw)
        c.ref = ref
        stable = jnp.ones_like(mask)
        clipped = jnp.zeros_like(mask)
        weights = []
        for sp in parts.stabiliser:
            w_s, c_s = STABILISERS[sp.name](c, **sp.kw)
            weights.append(w_s)
            stable = stable * w_s
            clipped = jnp.maximum(clipped, c_s)
        agg = parts.aggregation.kw
        w, d = _aggregation.aggregation_weights(mask, parts.aggregation.name, **agg)
        w = w * g[:, None]
        tok = upge_token_terms(logp, ref, a, stable, mask)
        obj = objective_terms(parts, c, ref, c.adv, stable, weights)
        if term.kl is not None and term.kl.where == "loss":
            kl = reg.kl_loss_terms(logp, c.get("ref_logp"), mask, term.kl.coef, term.kl.kind)
            tok, obj = tok + kl, obj + sg(kl)
        if term.entropy_coef:
            if entropy is None:
                raise ValueError(f"term {term.name!r} has an entropy bonus: pass entropy=")
            bonus = reg.entropy_bonus_terms(entropy, mask, term.entropy_coef)
            tok, obj = tok + bonus, obj + sg(bonus)
        total = total + jnp.sum(jnp.where(w > 0, w * tok, 0.0))
        objective = objective + jnp.sum(jnp.where(w > 0, w * obj, 0.0))
        if c.row_objective is not None:
            objective = objective + jnp.sum(g * d * c.row_objective)
        denom = denom + jnp.sum(d * (g > 0))
        valid = mask * (g[:, None] > 0)
        m = token_metrics(
            valid,
            advantages=None if vocab_level else a,
            logp=None if vocab_level else logp,
            old_logp=batch.get("old_logp") if parts.reference.name in ("behaviour", "gspo") else None,
        )
        m["clip_frac"] = masked_mean(clipped, valid)
        m["tokens"] = jnp.sum(valid)
        if c.pair_margin is not None:  # pairwise losses: mean margin and accuracy over the pairs
            used = (g > 0).astype(jnp.float32)
            m["margin"] = masked_mean(c.pair_margin, used)
            m["accuracy"] = masked_mean((c.pair_margin > 0).astype(jnp.float32), used)
        metrics.update({f"{term.name}/{role}/{k}": v for k, v in m.items()})
    metrics[f"objective_sum/{term.name}"] = term.coef * sg(objective)
    return term.coef * total, denom, metrics


def compute_loss(
    recipe: Recipe, logp: jax.Array, batch: dict, *, group_size: int = 1, entropy: jax.Array | None = None
):
    """The UPGE loss builder: ``(loss_sums, denominators, metrics)`` for a `Recipe`.

    ``loss_sums`` and ``denominators`` are dicts ``{term name: []}``; the loss is
    ``normalise(loss_sums, denominators) = Σ_k S_k / D_k``. Nothing is
    pre-divided: to accumulate micro-batches (or reduce over shards), add the
    ``S_k`` and the ``D_k`` separately, then normalise once. For exact gradient
    accumulation compute the denominators first (they depend only on masks and
    gates, see `denominators`) and differentiate ``Σ_k S_k^{(mb)} / D_k`` per
    micro-batch.

    If ``batch`` has not been through `prepare`, it is prepared here (on this
    batch alone, with ``logp`` as the policy — fine for a whole batch, wrong for a
    micro-batch of it).

    Example (GRPO, G rollouts per question)::

      recipe = upge.get_recipe('grpo', kl_coef=0.04)
      def loss_fn(params):
        logp = model_logp(params, batch)                       # [B, T]
        sums, dens, metrics = upge.compute_loss(recipe, logp, batch, group_size=G)
        return upge.normalise(sums, dens), metrics

    Args:
      recipe: the `Recipe`.
      logp: ``[B, T]`` current-policy token log-probs (the only differentiated
        input); ``[B, T, V]`` full log-softmax for vocabulary-level recipes
        (``distill_fkl``).
      batch: dict of ``[B, ...]`` arrays (see the module docstring).
      group_size: rows per question ``G`` (2 for preference pairs).
      entropy: ``[B, T]`` differentiable entropies, for entropy bonuses.

    The surrogate's value is not the method's objective (it is ``−1`` for SFT, ``≈ 0`` for
    GRPO); the metrics carry the objective, aggregated exactly like the surrogate:
    ``objective_sum/<term>`` is its sum ``S^obj_k`` (add over micro-batches, divide by the
    global ``D_k``), ``loss/<term>`` ``= S^obj_k / D_k`` on this batch and ``objective``
    ``= Σ_k loss/<term>`` (the NLL for SFT, the clipped PPO objective, the DPO loss, ...).

    Returns:
      ``(loss_sums: dict[str, []], denominators: dict[str, []], metrics: dict[str, []])``.
    """
    metrics = {}
    if not _is_prepared(recipe, batch):
        batch, metrics = prepare(recipe, batch, group_size=group_size, logp=logp)
    sums, dens = {}, {}
    for term in recipe.terms:
        s, d, m = term_loss(term, logp, batch, group_size=group_size, entropy=entropy)
        sums[term.name], dens[term.name] = s, d
        metrics.update(m)
        metrics[f"loss/{term.name}"] = safe_div(m[f"objective_sum/{term.name}"], d)
    metrics["objective"] = sum(metrics[f"loss/{k}"] for k in sums)
    mask = jnp.asarray(batch["mask"], jnp.float32)
    if jnp.ndim(logp) == 2:
        metrics["nll"] = masked_mean(-sg(logp), mask)
        if "ref_logp" in batch:
            metrics["kl_ref"] = masked_mean(reg.kl_estimate(sg(logp), batch["ref_logp"], "k3"), mask)
    ent = entropy if entropy is not None else batch.get("entropy")
    if ent is not None:
        metrics["entropy"] = masked_mean(sg(ent), mask)
    return sums, dens, metrics


def denominators(recipe: Recipe, batch: dict, *, group_size: int = 1) -> dict:
    """The denominators ``{term: D_k}`` alone (no parameters needed).

    Math: ``D_k = Σ_{row kinds} Σ_i 1[g_i > 0] d_i`` with ``d_i`` the aggregation's
    per-row denominator (``|y_i|`` for token-mean, 1 for the seq-mean modes).

    They depend only on masks, row kinds and gates; compute them over the whole
    batch before a gradient-accumulation loop so that every micro-batch is
    normalised by the global ``D_k``.

    Args:
      recipe: the `Recipe`.
      batch: the (prepared or raw) batch, ``[B, ...]`` arrays.
      group_size: rows per question.

    Returns:
      ``dict[str, []]``.
    """
    if not _is_prepared(recipe, batch):
        batch, _ = prepare(recipe, batch, group_size=group_size)
    mask = jnp.asarray(batch["mask"], jnp.float32)
    b = mask.shape[0]
    out = {}
    for term in recipe.terms:
        total = jnp.zeros((), jnp.float32)
        for role, parts in term.roles():
            rows = _role_rows(batch, role, b)
            gate = batch[_key(term, role, "gate")] if parts.gate is not None else jnp.ones((b,))
            _, d = _aggregation.aggregation_weights(mask, parts.aggregation.name, **parts.aggregation.kw)
            total = total + jnp.sum(d * ((jnp.asarray(gate) * rows) > 0))
        out[term.name] = total
    return out
