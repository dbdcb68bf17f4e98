"""UPGE: the Unified Policy Gradient Estimator — every post-training loss as one surrogate.

    L = − Σ_t w_t · sg(1_stable(t) · Â_t) · exp(log π_θ(o_t) − sg(log π_ref(o_t)))

Four interchangeable parts plus aggregation, all pure functions on arrays:

* stabilisers ``1_stable``: `no_stabiliser`, `ppo_clip`, `dual_clip`, `cispo_weight`,
  `gspo_clip`, `truncated_is`, `icepop`, `policy_shaping`;
* references ``π_ref``: `current_policy_reference`, `behaviour_reference`,
  `unit_reference`, `gspo_reference` (with `sequence_log_ratio`);
* advantages ``Â``: `constant_advantages`, `reinforce_advantages`, `gae_advantages`,
  `grpo_advantages`, `dr_grpo_advantages`, `rloo_advantages`,
  `reinforce_pp_advantages`, `reinforce_pp_baseline_advantages`,
  `remax_advantages`, `teacher_log_ratio_advantages`, `gpg_advantages`;
* aggregation ``w_t``: `aggregation_weights`, `aggregate`, `normalise`.

The surrogate: `upge_token_terms`, `policy_gradient_loss`. Regularisers:
`kl_estimate`, `kl_loss_terms`, `kl_penalised_rewards`, `entropy_bonus_terms`.
Preference (`dpo_loss`, `ipo_loss`, `simpo_loss`, `orpo_loss`; KTO's
`kto_advantages`, `kto_reference_point`) and distillation
(`forward_kl_loss`, `reverse_kl_loss`, `generalized_jsd_loss`) terms. Recipes as
data: `Recipe`, `Term`, `Parts`, `part`, `get_recipe`, `RECIPES`; the loss
builder `prepare` → `compute_loss` → `normalise`. Gates: `pass_rate`,
`hard_gate`, `soft_gate`, `linear_gate`, `mix_gate`.

Recipes are values: `recipe_to_dict` / `recipe_from_dict` (plain JSON-able data);
`register_stabiliser`, `register_reference`, `register_advantage`, `register_gate`
add a part without editing the library, each with its `Needs`; `requirements`
says what a recipe needs (batch keys, reference, teacher, critic, groups, demos).

This package imports nothing else from `upt_jax`.
"""

from upt_jax.upge._advantages import (
    constant_advantages,
    dr_grpo_advantages,
    gae_advantages,
    group_statistics,
    gpg_advantages,
    grpo_advantages,
    last_token_rewards,
    reinforce_advantages,
    reinforce_pp_advantages,
    reinforce_pp_baseline_advantages,
    remax_advantages,
    reward_to_go,
    rloo_advantages,
    teacher_log_ratio_advantages,
    zero_variance_fraction,
)
from upt_jax.upge._aggregation import AGGREGATION_MODES, aggregate, aggregation_weights, normalise
from upt_jax.upge._common import (
    broadcast_to_tokens,
    last_token_mask,
    masked_mean,
    masked_std,
    masked_sum,
    masked_whiten,
    safe_div,
)
from upt_jax.upge._distill import forward_kl_advantages, forward_kl_loss, generalized_jsd_loss, reverse_kl_loss
from upt_jax.upge._gates import hard_gate, linear_gate, mix_gate, pass_rate, soft_gate
from upt_jax.upge._loss import (
    ADVANTAGES,
    GATE_PARTS,
    REFERENCES,
    STABILISERS,
    compute_loss,
    denominators,
    prepare,
    term_loss,
)
from upt_jax.upge._needs import NEEDS, Needs
from upt_jax.upge._parts import KLPenalty, Part, Parts, Recipe, Term, part
from upt_jax.upge._preference import (
    dpo_advantages,
    dpo_loss,
    ipo_advantages,
    ipo_loss,
    orpo_advantages,
    orpo_loss,
    preference_surrogate,
    sequence_logps,
    simpo_advantages,
    simpo_loss,
)
from upt_jax.upge import _wiring  # registers the 2025–26 losses' parts  # noqa: F401
from upt_jax.upge._kto import kto_advantages, kto_reference_point
from upt_jax.upge._recipe_table import recipe_table
from upt_jax.upge._recipes import RECIPES, all_recipes, get_recipe
from upt_jax.upge._registry import (
    PartContext,
    register_advantage,
    register_gate,
    register_reference,
    register_stabiliser,
)
from upt_jax.upge._requirements import CriticUse, GroupUse, Requirements, requirements
from upt_jax.upge._references import (
    behaviour_reference,
    current_policy_reference,
    gspo_reference,
    sequence_log_ratio,
    unit_reference,
)
from upt_jax.upge._regularisers import (
    KL_ESTIMATORS,
    entropy_bonus_terms,
    entropy_from_logits,
    kl_estimate,
    kl_loss_terms,
    kl_penalised_rewards,
)
from upt_jax.upge._serialise import recipe_from_dict, recipe_to_dict
from upt_jax.upge._stabilisers import (
    cispo_weight,
    dual_clip,
    gspo_clip,
    icepop,
    no_stabiliser,
    policy_shaping,
    ppo_clip,
    truncated_is,
)
from upt_jax.upge._surrogate import policy_gradient_loss, token_metrics, upge_token_terms
