"""The generated recipe table (``docs/recipes.md``): every recipe, its parts, its reference and
the convention choices where a paper, its released code and the peers differ."""

from __future__ import annotations

from upt_jax.upge import _registry
from upt_jax.upge._aggregation import AGGREGATION_MODES
from upt_jax.upge._recipes import all_recipes

_STD = (
    "group std: population (`std_ddof=0`) + `std_eps=1e-6` by default (the paper); `std_ddof=1` is `torch.std`, as TRL"
)

# recipe name -> the convention it follows where sources differ (one line each)
CONVENTIONS = {
    "grpo": _STD,
    "dapo": _STD,
    "gspo": _STD,
    "cispo": _STD,
    "luffy": _STD,
    "srft": _STD + " (its `rl_demo` term)",
    "hpt": _STD + " (`paper_text`; `released_code` divides by no std)",
    "grpo_process": "std over the group's steps: `std_ddof`, `std_eps` as `grpo`",
    "rloo": "the paper's estimator: per-sequence REINFORCE (token sum of log π, mean over sequences), "
    "no ratio, no clip; `rloo_ppo` is the PPO-clipped token-mean form used before",
    "rloo_ppo": "the leave-one-out advantage inside PPO's clipped ratio, token-mean (as verl's "
    "`adv_estimator=rloo` with its PPO loss)",
    "ipo": "the paper's sequence log-ratios (sums over tokens); `ipo_length_avg` is TRL's token means",
    "ipo_length_avg": "TRL's `loss_type=\"ipo\"`: log-ratios averaged over each response's tokens",
    "orpo": "the paper's Eq. 6: mean over pairs of the chosen NLL (a token mean within the pair) plus "
    "λ · −log σ(log-odds ratio); the released code and TRL pool the NLL over the batch's chosen tokens",
    "sapo": "τ_pos = 1, τ_neg = 1.05; group-normalised advantage; token mean per sequence, mean over "
    "sequences (the paper's objective); " + _STD,
    "gmpo": "the clip is in log space, ε = 0.4 both sides; clipped tokens carry no gradient and their clipped "
    "log-ratio enters the geometric mean; one term per sequence; " + _STD,
    "gpg": "α = B/(B − M) with M the rows of groups whose rewards are all equal (α = 1 if all are); F_norm = 1 "
    "(`scale_by_std`: σ_g + `std_eps`); token-mean over the batch; verl's α counts non-zero rewards "
    "instead (not followed)",
    "clip_cov": "PPO clip ε = 0.2 (their code; their 7B script sets 1.0); the covariance (means over the "
    "batch's tokens) and the draw are made once per batch in `prepare`, so micro-batching cannot "
    "change them, from the policy's log-probs (`compute_loss` on a whole batch) or `old_logp` (the "
    "trainer: the policy's own at a step's first update); tokens the clip holds are no candidates; "
    'the draw is `batch["clip_cov_uniforms"]` (the trainer draws it from its step key) or a seeded '
    "hash of the batch; selected tokens get Â = 0, so their loss value is 0 too (as their code)",
    "kl_cov": "selection as `clip_cov` (in `prepare`; ties to the lower row-major index); r = 2e-4 (verl, and "
    "the paper's 32B runs; its 7B runs used 2e-3) and β = 1; no PPO clip; the penalty is its own "
    "term, a token mean over the same tokens; d|x|/dx = sign(x), 0 at 0",
    "dppo_tv": "δ = 0.15; Dr.GRPO advantage and token sum / L as the authors' runs; truncated IS weight "
    "min(r, C), C = 20 (verl; the authors' runs set 10⁴); the mask is against `old_logp`",
    "dppo_kl": "δ = 0.05, D with the 10⁻⁸ of their code; otherwise as `dppo_tv`",
    "opd_pg": "one PPO-clipped term: each sampled token's reverse-KL reward, measured with the behaviour "
    "log-probs, plus α × the group-normalised outcome advantage (α = 1); token-mean",
    "kto": "z₀ = max(0, mean over mismatched (prompt, completion) pairs of Σ log π/π_ref) is a batch input "
    "(`kto_z0`, no gradient, computed by the trainer as TRL does); the loss is the mean over all rows",
    "hpt_released_code": "see below",
}


def _fmt_parts(p):
    st = " · ".join(str(s) for s in p.stabiliser)
    return st, str(p.reference), str(p.advantage), str(p.aggregation), str(p.gate) if p.gate else ""


def recipe_table() -> str:
    """The Markdown table of every recipe and its four parts (``docs/recipes.md``).

    Returns:
      Markdown text: one row per recipe, loss term and row kind.
    """
    lines = [
        "# Recipes",
        "",
        "Generated from `upt_jax.upge` by `python tools/gen_recipe_table.py`; do not edit by hand",
        "(`tests/upge/test_recipe_table.py` fails when this file is stale).",
        "",
        "Every recipe is one instance of the UPGE surrogate",
        "`L = − Σ_t w_t · sg(1_stable · Â_t) · exp(log π_θ − sg(log π_ref))`,",
        "one row per loss term and row kind (rollout / demo).",
        "",
        "## Using a recipe on a mixed batch (rollouts + demonstrations)",
        "",
        "```python",
        "import upt_jax.upge as upge",
        "",
        "recipe = upge.get_recipe('luffy')        # or 'hpt', 'srft', or your own upge.Recipe",
        "batch = dict(mask=mask,                  # [B, T]; B = questions * G, a question's rows contiguous",
        "             rewards=rewards,            # [B] verifier rewards (demos: their reward, e.g. 1)",
        "             old_logp=old_logp,          # [B, T] behaviour log-probs (any finite value on demo rows)",
        "             is_demo=is_demo)            # [B] bool, True on demonstration rows",
        "batch, _ = upge.prepare(recipe, batch, group_size=G)   # advantages and gates, whole batch",
        "dens = upge.denominators(recipe, batch, group_size=G)  # parameter-free, whole batch",
        "",
        "def loss_fn(params, mb):                 # mb: any split of `batch` into whole groups",
        "  logp = token_logp(params, mb)          # [b, T], the only differentiated input",
        "  sums, _, metrics = upge.compute_loss(recipe, logp, mb, group_size=G)",
        "  return upge.normalise(sums, dens), metrics   # Σ_k S_k / D_k: exact under accumulation",
        "```",
        "",
        "Each row kind carries its own parts: a `Term` holds `rollout=Parts(...)` and",
        "`demo=Parts(...)` (e.g. demo: `π_ref ≡ 1` with policy shaping; rollout: `old_logp` with",
        "the PPO clip). A new method is a new combination of registered parts:",
        "",
        "```python",
        "grpo_tis = upge.Recipe('grpo_tis', (upge.Term('pg', rollout=upge.Parts(",
        "    stabiliser=(upge.part('ppo_clip', eps_low=0.2, eps_high=0.28), upge.part('tis', cap=2.0)),",
        "    reference=upge.part('behaviour'), advantage=upge.part('grpo'),",
        "    aggregation=upge.part('token-mean'))),))",
        "```",
        "",
        f"Registered parts — stabilisers: {', '.join(f'`{k}`' for k in _registry.library_parts('stabiliser'))}; "
        f"references: {', '.join(f'`{k}`' for k in _registry.library_parts('reference'))}; "
        f"advantages: {', '.join(f'`{k}`' for k in _registry.library_parts('advantage'))}; "
        f"aggregations: {', '.join(f'`{k}`' for k in AGGREGATION_MODES)}; "
        f"gates: {', '.join(f'`{k}`' for k in _registry.library_parts('gate'))}.",
        "",
        "## Every recipe and its parts",
        "",
        "| recipe | term | rows | stabiliser `1_stable` | reference `π_ref` | advantage `Â` "
        "| aggregation `w_t` | gate | regularisers | batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in all_recipes():
        for t in r.terms:
            reg = []
            if t.kl is not None:
                reg.append(f"KL {t.kl}")
            if t.entropy_coef:
                reg.append(f"entropy {t.entropy_coef}")
            if t.coef != 1.0:
                reg.append(f"coef {t.coef}")
            for role, p in t.roles():
                cells = _fmt_parts(p)
                lines.append(
                    f"| {r.name} | {t.name} | {role} | "
                    + " | ".join(f"`{x}`" if x else "" for x in cells)
                    + f" | {'; '.join(reg)} | {r.notes} |"
                )
    lines += [
        "",
        "## Reference and convention of each recipe",
        "",
        "| recipe | reference | convention |",
        "|---|---|---|",
    ]
    for r in all_recipes():
        lines.append(f"| {r.name} | {r.citation} | {CONVENTIONS.get(r.name, '')} |")
    lines += [
        "",
        "## Conventions",
        "",
        "* `hpt_released_code` is the released code's loss (`mix_actor.py`, `offline_loss_type=sft`):",
        "  `L = −Σ_{RL rows, t} Â ρ / (L · n) + sft_loss_coef · NLL`, with `n` the routed rows (the",
        "  rollouts of RL-routed questions plus one demonstration per SFT-routed question: the `rl`",
        "  term's demo rows carry `Â ≡ 0` and only count in `n`) and `NLL` the token mean pooled over",
        "  the demonstration tokens of SFT-routed questions. `sft_loss_coef` (default 1.0, as released)",
        "  scales the `sft` term only (in `hpt` too).",
    ]
    lines.append("")
    return "\n".join(lines)
