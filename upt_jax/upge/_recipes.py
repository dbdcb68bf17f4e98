"""Named recipes: each is a few lines choosing the UPGE parts.

Every constructor takes the method's hyper-parameters as keyword arguments and
returns a frozen `Recipe`; `get_recipe(name, **hparams)` looks one up by name.
A new method is a new combination — write it the same way in a notebook::

  my_recipe = Recipe('grpo_tis', terms=(Term('pg', rollout=Parts(
      stabiliser=(part('ppo_clip', eps_low=0.2, eps_high=0.28), part('tis', cap=2.0)),
      reference=part('behaviour'), advantage=part('grpo'),
      aggregation=part('token-mean'))),))
"""

from __future__ import annotations

from upt_jax.upge import _registry
from upt_jax.upge._aggregation import AGGREGATION_MODES
from upt_jax.upge._parts import KLPenalty, Parts, Recipe, Term, part

_NONE = (part('none'),)


def _rl(stabiliser, reference, advantage, aggregation='token-mean', **agg):
  return Parts(stabiliser=tuple(stabiliser), reference=part(reference),
               advantage=advantage, aggregation=part(aggregation, **agg))


def sft() -> Recipe:
  """SFT: ``Â ≡ 1``, ``π_ref = π_θ`` (∇log π), token-mean; the NLL's gradient.

  Batch: ``mask [B, T]`` (rows are demonstrations or any target text).
  """
  return Recipe('sft', (Term('sft', rollout=_rl(_NONE, 'current', part('one'))),),
                'supervised fine-tuning (NLL)', 'mask [B, T]')


def reinforce() -> Recipe:
  """REINFORCE (Williams 1992): ``Â_i = r_i``, ∇log π, token-mean.

  Batch: ``mask [B, T], rewards [B]``.
  """
  return Recipe('reinforce', (Term('pg', rollout=_rl(_NONE, 'current', part('reinforce'))),),
                'Williams 1992', 'mask [B, T], rewards [B]')


def ppo(eps: float = 0.2, gamma: float = 1.0, lam: float = 0.95,
        dual_clip_c: float | None = None, kl_coef: float = 0.0,
        kl_kind: str = 'k1') -> Recipe:
  """PPO (Schulman et al. 2017): GAE advantages from a critic, clipped ratio, token-mean.

  Outcome reward on the last valid token (plus ``−kl_coef · k`` per token when
  ``kl_coef > 0``, the InstructGPT KL-in-reward); no advantage whitening. The
  value loss is separate. ``dual_clip_c`` switches to dual-clip PPO.

  Batch: ``mask [B, T], rewards [B], old_logp [B, T], values [B, T]`` (+ ``ref_logp [B, T]`` with KL).
  """
  st = (part('dual_clip', eps_low=eps, eps_high=eps, c_dual=dual_clip_c) if dual_clip_c
        else part('ppo_clip', eps_low=eps, eps_high=eps),)
  kl = KLPenalty(kl_coef, kl_kind, 'reward') if kl_coef else None
  return Recipe('ppo', (Term('pg', rollout=_rl(st, 'behaviour', part('gae', gamma=gamma, lam=lam)),
                             kl=kl),),
                'Schulman et al. 2017', 'mask [B, T], rewards [B], old_logp [B, T], values [B, T]')


def grpo(eps: float = 0.2, kl_coef: float = 0.0, kl_kind: str = 'k3',
         std_eps: float = 1e-6) -> Recipe:
  """GRPO (Shao et al. 2024): group-normalised advantage, PPO clip, seq-mean-token-mean.

  Optional KL to the reference model in the loss (``β · k3`` inside the
  per-sequence token mean, as in DeepSeekMath).

  Batch: ``mask [B, T], rewards [B], old_logp [B, T]`` (+ ``ref_logp [B, T]`` with KL); ``group_size = G``.
  """
  kl = KLPenalty(kl_coef, kl_kind, 'loss') if kl_coef else None
  return Recipe('grpo', (Term('pg', rollout=_rl(
      (part('ppo_clip', eps_low=eps, eps_high=eps),), 'behaviour', part('grpo', eps=std_eps),
      'seq-mean-token-mean'), kl=kl),), 'Shao et al. 2024', 'mask [B, T], rewards [B], old_logp [B, T]; groups')


def dr_grpo(eps: float = 0.2, max_len: int | None = None) -> Recipe:
  """Dr.GRPO (Liu et al. 2025): ``Â = r − mean_g``, PPO clip, token sum / constant ``L``.

  ``max_len=None`` uses ``L = T`` (the padded length).

  Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
  """
  return Recipe('dr_grpo', (Term('pg', rollout=_rl(
      (part('ppo_clip', eps_low=eps, eps_high=eps),), 'behaviour', part('dr_grpo'),
      'seq-mean-token-sum-norm', max_len=max_len)),), 'Liu et al. 2025', 'mask [B, T], rewards [B], old_logp [B, T]; groups')


def dapo(eps_low: float = 0.2, eps_high: float = 0.28,
         dynamic_sampling: bool = False) -> Recipe:
  """DAPO (Yu et al. 2025): clip-higher, token-mean, group-normalised advantage.

  ``dynamic_sampling=True`` drops groups whose rewards are all equal (from the
  sum and the denominator) instead of over-sampling.

  Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
  """
  p = _rl((part('ppo_clip', eps_low=eps_low, eps_high=eps_high),), 'behaviour',
          part('grpo', eps=1e-6))
  if dynamic_sampling:
    p = Parts(p.stabiliser, p.reference, p.advantage, p.aggregation, part('nonzero_variance'))
  return Recipe('dapo', (Term('pg', rollout=p),), 'Yu et al. 2025', 'mask [B, T], rewards [B], old_logp [B, T]; groups')


def gspo(eps_low: float = 3e-4, eps_high: float = 4e-4) -> Recipe:
  """GSPO (Zheng et al. 2025): sequence ratio ``s_i``, sequence clip, one term per sequence.

  ``π_ref`` is GSPO's length-normalised sequence reference (value ``s_i``,
  gradient ``s_i ∇log π``), aggregation seq-mean-token-mean (the token mean is
  the ``1/|y_i|`` of ``∇ log s_i``). With token-level advantages this is GSPO-token.

  Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
  """
  return Recipe('gspo', (Term('pg', rollout=_rl(
      (part('gspo_clip', eps_low=eps_low, eps_high=eps_high),), 'gspo', part('grpo', eps=1e-6),
      'seq-mean-token-mean')),), 'Zheng et al. 2025', 'mask [B, T], rewards [B], old_logp [B, T]; groups')


def cispo(eps_low: float = 1e9, eps_high: float = 0.28) -> Recipe:
  """CISPO (MiniMax-M1, 2025): ``sg(clip(r)) Â ∇log π`` — weight clipped, gradient kept.

  Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
  """
  return Recipe('cispo', (Term('pg', rollout=_rl(
      (part('cispo', eps_low=eps_low, eps_high=eps_high),), 'current', part('grpo', eps=1e-6))),),
      'MiniMax 2025', 'mask [B, T], rewards [B], old_logp [B, T]; groups')


def rloo(eps: float = 0.2) -> Recipe:
  """RLOO (Ahmadian et al. 2024): leave-one-out baseline, PPO clip, token-mean.

  Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
  """
  return Recipe('rloo', (Term('pg', rollout=_rl(
      (part('ppo_clip', eps_low=eps, eps_high=eps),), 'behaviour', part('rloo'))),),
      'Ahmadian et al. 2024', 'mask [B, T], rewards [B], old_logp [B, T]; groups')


def reinforce_pp(eps: float = 0.2, baseline: bool = True, kl_coef: float = 0.0,
                 kl_kind: str = 'k1') -> Recipe:
  """REINFORCE++ (Hu 2025): batch-whitened advantages, PPO clip, token-mean.

  ``baseline=True`` (default) is REINFORCE++-baseline: ``r − mean_g`` whitened
  over the batch's valid tokens. ``baseline=False`` is plain REINFORCE++: the
  return-to-go of token rewards with the ``k1`` KL folded in
  (``kl_coef``), whitened.

  Batch: ``mask [B, T], rewards [B], old_logp [B, T]`` (+ ``ref_logp [B, T]`` with KL); groups for the baseline form.
  """
  if baseline:
    a, kl = part('reinforce_pp_baseline', eps=1e-8), None
  else:
    a = part('reinforce_pp', eps=1e-8)
    kl = KLPenalty(kl_coef, kl_kind, 'reward') if kl_coef else None
  return Recipe('reinforce_pp', (Term('pg', rollout=_rl(
      (part('ppo_clip', eps_low=eps, eps_high=eps),), 'behaviour', a), kl=kl),),
      'Hu 2025', 'mask [B, T], rewards [B], old_logp [B, T]')


def remax() -> Recipe:
  """ReMax (Li et al. 2024): ``Â = r − r(greedy)``, ∇log π, token-mean.

  Batch: ``mask [B, T], rewards [B], baseline_rewards [B]``.
  """
  return Recipe('remax', (Term('pg', rollout=_rl(_NONE, 'current', part('remax'))),),
                'Li et al. 2024', 'mask [B, T], rewards [B], baseline_rewards [B]')


def grpo_process(eps: float = 0.2, std_eps: float = 1e-6) -> Recipe:
  """GRPO with process supervision (Shao et al. 2024, §4.1.3): per-step PRM rewards placed at
  step ends, normalised over the group's steps; ``Â_t`` = sum of the normalised rewards of the
  steps ending at or after ``t``; PPO clip, seq-mean-token-mean as GRPO.

  Batch: ``mask [B, T], old_logp [B, T], step_rewards [B, T], step_mask [B, T]``; groups.
  """
  return Recipe('grpo_process', (Term('pg', rollout=_rl(
      (part('ppo_clip', eps_low=eps, eps_high=eps),), 'behaviour', part('process', eps=std_eps),
      'seq-mean-token-mean')),), 'Shao et al. 2024 (process supervision)',
      'mask [B, T], old_logp [B, T], step_rewards [B, T], step_mask [B, T]; groups')


def rft(threshold: float = 0.5) -> Recipe:
  """Online rejection-sampling fine-tuning (RFT; Yuan et al. 2023, Zelikman et al. 2022):
  SFT on the policy's own verified-correct rollouts.

  ``Â ≡ 1``, ``π_ref = π_θ`` (∇log π), token-mean over the tokens of rollouts whose reward
  exceeds ``threshold`` (the ``correct`` gate removes the others from the sum and the
  denominator): ``L = −Σ_{i: r_i > τ} Σ_t log π(o_{i,t}) / Σ_{i: r_i > τ} |o_i|``.

  Batch: ``mask [B, T], rewards [B]``.
  """
  sf = _rl(_NONE, 'current', part('one'))
  return Recipe('rft', (Term('sft', rollout=Parts(sf.stabiliser, sf.reference, sf.advantage, sf.aggregation,
                                                  part('correct', threshold=threshold))),),
                'Yuan et al. 2023; Zelikman et al. 2022', 'mask [B, T], rewards [B]')


def _pref_recipe(name, adv, length_normalise, citation, notes):
  agg = 'seq-mean-token-mean' if length_normalise else 'seq-mean-token-sum'
  return Recipe(name, (Term(name, rollout=_rl(_NONE, 'current', adv, agg, rows_per_example=2)),),
                citation, notes + '; pairs as groups of 2 rows (chosen, rejected)')


def dpo(beta: float = 0.1, label_smoothing: float = 0.0) -> Recipe:
  """DPO (Rafailov et al. 2023), sigmoid loss with label smoothing: implicit advantage.

  Batch: ``mask [B, T], ref_logp [B, T]``; ``group_size=2`` rows per pair (chosen, rejected).
  """
  return _pref_recipe('dpo', part('dpo', beta=beta, label_smoothing=label_smoothing), False,
                      'Rafailov et al. 2023', 'mask [B, T], ref_logp [B, T]')


def ipo(beta: float = 0.1) -> Recipe:
  """IPO (Azar et al. 2023) with length-averaged log-ratios: implicit advantage.

  Batch: ``mask [B, T], ref_logp [B, T]``; pairs as groups of 2.
  """
  return _pref_recipe('ipo', part('ipo', beta=beta), True, 'Azar et al. 2023', 'mask [B, T], ref_logp [B, T]')


def simpo(beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0) -> Recipe:
  """SimPO (Meng et al. 2024): reference-free, length-normalised, margin ``γ``.

  Batch: ``mask [B, T]``; pairs as groups of 2.
  """
  return _pref_recipe('simpo', part('simpo', beta=beta, gamma=gamma,
                                    label_smoothing=label_smoothing), True,
                      'Meng et al. 2024', 'mask [B, T]')


def orpo(lam: float = 0.1) -> Recipe:
  """ORPO (Hong et al. 2024): chosen NLL plus ``λ`` odds-ratio term.

  Batch: ``mask [B, T]``; pairs as groups of 2.
  """
  return _pref_recipe('orpo', part('orpo', lam=lam), True, 'Hong et al. 2024', 'mask [B, T]')


def distill_fkl(temperature: float = 1.0, top_k: int | None = None) -> Recipe:
  """Forward-KL distillation ``KL(p_T ‖ q_θ)`` over the vocabulary, token-mean.

  ``logp`` is the student's full log-softmax ``[B, T, V]``; ``Â_v = p_T(v)``
  (top-``k`` renormalised if asked).

  Batch: ``mask [B, T], teacher_logits [B, T, V]``.
  """
  return Recipe('distill_fkl', (Term('distill', rollout=_rl(
      _NONE, 'current', part('teacher_probs', temperature=temperature, top_k=top_k))),),
      'Hinton et al. 2015', 'mask [B, T], teacher_logits [B, T, V]; logp is [B, T, V]')


def distill_on_policy() -> Recipe:
  """On-policy distillation: reverse KL on the student's own samples.

  ``Â_t = −(log π_θ − log π_T)`` per sampled token (stop-gradient), ∇log π.

  Batch: ``mask [B, T], teacher_logp [B, T]``.
  """
  return Recipe('distill_on_policy', (Term('distill', rollout=_rl(
      _NONE, 'current', part('teacher_log_ratio'))),),
      'Agarwal et al. 2024; Thinking Machines 2025', 'mask [B, T], teacher_logp [B, T]')


def luffy(eps: float = 0.2, shaping_gamma: float = 0.1) -> Recipe:
  """LUFFY (Yan et al. 2025): rollouts and a demonstration in one group.

  Advantages are group-normalised over the union (the demo is a member of its
  group); rollouts use the PPO clip with ``old_logp``; the demonstration uses
  ``π_ref ≡ 1`` and policy shaping ``f(π) = π/(π+γ)``, no clip; token-mean over
  all tokens.

  Batch: ``mask [B, T], rewards [B], old_logp [B, T], is_demo [B]``; groups (e.g. ``n−1`` rollouts + 1 demo).
  """
  a = part('grpo', eps=1e-6)
  return Recipe('luffy', (Term(
      'pg',
      rollout=_rl((part('ppo_clip', eps_low=eps, eps_high=eps),), 'behaviour', a),
      demo=_rl((part('policy_shaping', gamma=shaping_gamma),), 'unit', a)),),
      'Yan et al. 2025', 'mask [B, T], rewards [B], old_logp [B, T], is_demo [B]; groups hold the demo')


def srft(eps: float = 0.2, sft_coef: float = 0.5, rl_coef: float = 0.1,
         threshold: float = 0.5) -> Recipe:
  """SRFT (Fu et al. 2025, Eq. 12): ``L = L_SFT^demo + L_RL^demo + L_RL^self``.

  ``H̄_i`` is the mean token entropy of the policy on row ``i`` (``batch['entropy']``,
  stop-gradient). Each term is a token mean over its own rows:

  * ``sft`` (demos): NLL weighted by ``w_SFT = sft_coef · sg(exp(−H̄))``.
  * ``rl_demo`` (demos): off-policy RL with ``π_ref ≡ 1`` (ratio ``π_θ``), PPO clip,
    advantage group-normalised over the question's rollouts *and* its demo.
  * ``rl_self`` (rollouts): ``±1`` REINFORCE (reward > ``threshold``: +1, else −1),
    ∇log π, no ratio; positives weighted by ``w_RL = rl_coef · sg(exp(+H̄))``.

  Batch: ``mask [B, T], rewards [B], entropy [B, T], is_demo [B]``; groups = rollouts + demo.
  """
  return Recipe('srft', (
      Term('sft', demo=_rl((part('entropy_weight', coef=sft_coef, form='exp_neg'),),
                           'current', part('one'))),
      Term('rl_demo', demo=_rl((part('ppo_clip', eps_low=eps, eps_high=eps),), 'unit',
                               part('grpo', eps=1e-6, rows='all'))),
      Term('rl_self', rollout=_rl((part('entropy_weight', coef=rl_coef, form='exp',
                                        positive_only=True, threshold=threshold),),
                                  'current', part('sign', threshold=threshold))),
  ), 'Fu et al. 2025', 'mask [B, T], rewards [B], entropy [B, T], is_demo [B]; groups = rollouts + demo')


def hpt(variant: str = 'paper_text', gamma: float = 0.0, eps: float = 0.2,
        max_len: int | None = None, gate: str = 'hard', offline: str = 'sft',
        shaping_gamma: float = 0.1, sft_loss_coef: float = 1.0, **gate_kwargs) -> Recipe:
  """HPT (Lv et al. 2025): per question, RL on its rollouts or SFT on its demonstration.

  The gate reads the question's pass rate ``P`` (rollouts with reward > 0.5);
  ``'hard'``: ``P > γ`` → RL (α=1, β=0), else SFT (α=0, β=1). Other gates:
  ``'soft'``, ``'linear'``, ``'mix'`` (see `upt_jax.upge.gates`).

  * ``variant='paper_text'`` (Eq. 11): RL term with PPO clip and
    ``(r − mean)/(std + 1e-6)``, token-mean over the rollouts of RL-routed
    questions; SFT term token-mean over demos of SFT-routed questions;
    L = L_RL + sft_loss_coef · L_SFT (the paper: coefficient 1).
  * ``variant='released_code'`` (``mix_actor.py``, ``offline_loss_type='sft'``, as
    ``exp_scripts/train.sh`` runs it): ``L = L_RL + sft_loss_coef · L_SFT``.

    - ``rl``: no clip (plain ratio), ``Â = r − mean_g``, token sum over the rollouts of
      RL-routed questions divided by ``L · n`` (``L = max_len``, default ``T``; ``n`` =
      routed rows: the rollouts of RL-routed questions plus one demonstration per
      SFT-routed question — the demos sit in the denominator with ``Â ≡ 0``).
    - ``sft``: the NLL token mean pooled over the demonstration tokens of SFT-routed
      questions (``compute_sft_pure_loss``), times ``sft_loss_coef`` (default 1.0, the
      released default; it multiplies only this term).

    The released code adds, per micro-batch, the RL sum ``Σ/L`` (not divided by rows)
    and the micro-batch's SFT token mean, and sums micro-batch gradients; its RL:SFT
    weight so depends on the micro-batching: with one micro-batch of ``R`` rows per
    device it is ``R`` times this one's (``sft_loss_coef = c / R`` reproduces a released ``c``).

  ``offline`` (``paper_text`` only) is what an SFT-routed question learns from its
  demonstration (the offline-signal ablation): ``'sft'`` (NLL, the paper),
  ``'rl'`` (off-policy RL as LUFFY's demonstration term: ``π_ref ≡ 1``, shaping
  ``f(π) = π/(π+shaping_gamma)``, advantage group-normalised over the question's
  rollouts and demonstration, token-mean over routed demos) or ``'both'`` (the two
  terms added).

  Batch: ``mask [B, T], rewards [B], old_logp [B, T], is_demo [B]``; a group is a question's rollouts and its demo.
  """
  gkw = dict(gate_kwargs)
  if gate in ('hard', 'soft'):
    gkw.setdefault('gamma', gamma)
  g_rl = part('hpt', gate=gate, branch='rl', **gkw)
  g_sft = part('hpt', gate=gate, branch='sft', **gkw)
  notes = 'mask [B, T], rewards [B], old_logp [B, T], is_demo [B]; groups = rollouts + demo'
  if variant == 'paper_text':
    if offline not in ('sft', 'rl', 'both'):
      raise ValueError(f"HPT offline={offline!r}: 'sft', 'rl' or 'both'")
    rl = _rl((part('ppo_clip', eps_low=eps, eps_high=eps),), 'behaviour', part('grpo', eps=1e-6))
    sf = _rl(_NONE, 'current', part('one'))
    od = _rl((part('policy_shaping', gamma=shaping_gamma),), 'unit', part('grpo', eps=1e-6, rows='all'))
    terms = [Term('rl', rollout=Parts(rl.stabiliser, rl.reference, rl.advantage, rl.aggregation, g_rl))]
    if offline in ('sft', 'both'):
      terms.append(Term('sft', demo=Parts(sf.stabiliser, sf.reference, sf.advantage, sf.aggregation, g_sft),
                        coef=sft_loss_coef))
    if offline in ('rl', 'both'):
      terms.append(Term('rl_demo', demo=Parts(od.stabiliser, od.reference, od.advantage, od.aggregation,
                                              g_sft)))
    name = 'hpt' if offline == 'sft' else f'hpt_offline_{offline}'
    return Recipe(name, tuple(terms), 'Lv et al. 2025 (paper text, Eq. 11)', notes)
  if variant == 'released_code':
    if offline != 'sft':
      raise ValueError(f"HPT offline={offline!r} is defined for variant='paper_text' only")
    rl = _rl(_NONE, 'behaviour', part('dr_grpo'), 'seq-mean-token-sum-norm', max_len=max_len)
    # a routed demo counts one row in the RL denominator and adds nothing to its sum
    seat = _rl(_NONE, 'current', part('one', value=0.0), 'seq-mean-token-sum-norm', max_len=max_len)
    sf = _rl(_NONE, 'current', part('one'))
    return Recipe('hpt_released_code', (
        Term('rl', rollout=Parts(rl.stabiliser, rl.reference, rl.advantage, rl.aggregation, g_rl),
             demo=Parts(seat.stabiliser, seat.reference, seat.advantage, seat.aggregation, g_sft)),
        Term('sft', demo=Parts(sf.stabiliser, sf.reference, sf.advantage, sf.aggregation, g_sft),
             coef=sft_loss_coef),
    ), 'Lv et al. 2025 (released code)', notes)
  raise ValueError(f"unknown HPT variant {variant!r}: 'paper_text' or 'released_code'")


RECIPES = {
    'sft': sft, 'reinforce': reinforce, 'ppo': ppo, 'grpo': grpo, 'dr_grpo': dr_grpo,
    'dapo': dapo, 'gspo': gspo, 'cispo': cispo, 'rloo': rloo,
    'reinforce_pp': reinforce_pp, 'remax': remax, 'rft': rft, 'grpo_process': grpo_process, 'dpo': dpo, 'ipo': ipo,
    'simpo': simpo, 'orpo': orpo, 'distill_fkl': distill_fkl,
    'distill_on_policy': distill_on_policy, 'luffy': luffy, 'srft': srft, 'hpt': hpt,
}


def get_recipe(name: str, **hparams) -> Recipe:
  """Looks up a named recipe and builds it with ``hparams``.

  ``'hpt_released_code'`` is shorthand for ``get_recipe('hpt', variant='released_code')``.

  Args:
    name: a key of `RECIPES` (or ``'hpt_paper_text'`` / ``'hpt_released_code'``).
    **hparams: the constructor's keyword arguments.

  Returns:
    The `Recipe`.
  """
  if name.startswith('hpt_'):
    return hpt(variant=name[len('hpt_'):], **hparams)
  if name not in RECIPES:
    raise KeyError(f'unknown recipe {name!r}; known: {sorted(RECIPES)}')
  return RECIPES[name](**hparams)


def all_recipes() -> list[Recipe]:
  """Every named recipe with default hyper-parameters (both HPT variants).

  Returns:
    A list of `Recipe` s, in `RECIPES` order, ``hpt`` last as its two variants.
  """
  out = [fn() for name, fn in RECIPES.items() if name != 'hpt']
  return out + [hpt('paper_text'), hpt('released_code')]


def _fmt_parts(p):
  st = ' · '.join(str(s) for s in p.stabiliser)
  return st, str(p.reference), str(p.advantage), str(p.aggregation), str(p.gate) if p.gate else ''


def recipe_table() -> str:
  """The Markdown table of every recipe and its four parts (``docs/recipes.md``).

  Returns:
    Markdown text: one row per recipe, loss term and row kind.
  """
  lines = [
      '# Recipes',
      '',
      'Generated from `upt_jax.upge` by `python tools/gen_recipe_table.py`; do not edit by hand',
      '(`tests/upge/test_recipe_table.py` fails when this file is stale).',
      '',
      'Every recipe is one instance of the UPGE surrogate',
      '`L = − Σ_t w_t · sg(1_stable · Â_t) · exp(log π_θ − sg(log π_ref))`,',
      'one row per loss term and row kind (rollout / demo).',
      '',
      '## Using a recipe on a mixed batch (rollouts + demonstrations)',
      '',
      '```python',
      'import upt_jax.upge as upge',
      '',
      "recipe = upge.get_recipe('luffy')        # or 'hpt', 'srft', or your own upge.Recipe",
      'batch = dict(mask=mask,                  # [B, T]; B = questions * G, a question\'s rows contiguous',
      '             rewards=rewards,            # [B] verifier rewards (demos: their reward, e.g. 1)',
      '             old_logp=old_logp,          # [B, T] behaviour log-probs (any finite value on demo rows)',
      '             is_demo=is_demo)            # [B] bool, True on demonstration rows',
      'batch, _ = upge.prepare(recipe, batch, group_size=G)   # advantages and gates, whole batch',
      'dens = upge.denominators(recipe, batch, group_size=G)  # parameter-free, whole batch',
      '',
      'def loss_fn(params, mb):                 # mb: any split of `batch` into whole groups',
      '  logp = token_logp(params, mb)          # [b, T], the only differentiated input',
      '  sums, _, metrics = upge.compute_loss(recipe, logp, mb, group_size=G)',
      '  return upge.normalise(sums, dens), metrics   # Σ_k S_k / D_k: exact under accumulation',
      '```',
      '',
      'Each row kind carries its own parts: a `Term` holds `rollout=Parts(...)` and',
      '`demo=Parts(...)` (e.g. demo: `π_ref ≡ 1` with policy shaping; rollout: `old_logp` with',
      'the PPO clip). A new method is a new combination of registered parts:',
      '',
      '```python',
      "grpo_tis = upge.Recipe('grpo_tis', (upge.Term('pg', rollout=upge.Parts(",
      "    stabiliser=(upge.part('ppo_clip', eps_low=0.2, eps_high=0.28), upge.part('tis', cap=2.0)),",
      "    reference=upge.part('behaviour'), advantage=upge.part('grpo'),",
      "    aggregation=upge.part('token-mean'))),))",
      '```',
      '',
      f'Registered parts — stabilisers: {", ".join(f"`{k}`" for k in _registry.library_parts("stabiliser"))}; '
      f'references: {", ".join(f"`{k}`" for k in _registry.library_parts("reference"))}; '
      f'advantages: {", ".join(f"`{k}`" for k in _registry.library_parts("advantage"))}; '
      f'aggregations: {", ".join(f"`{k}`" for k in AGGREGATION_MODES)}; '
      f'gates: {", ".join(f"`{k}`" for k in _registry.library_parts("gate"))}.',
      '',
      '## Every recipe and its parts',
      '',
      '| recipe | term | rows | stabiliser `1_stable` | reference `π_ref` | advantage `Â` '
      '| aggregation `w_t` | gate | regularisers | batch |',
      '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for r in all_recipes():
    for t in r.terms:
      reg = []
      if t.kl is not None:
        reg.append(f'KL {t.kl}')
      if t.entropy_coef:
        reg.append(f'entropy {t.entropy_coef}')
      if t.coef != 1.0:
        reg.append(f'coef {t.coef}')
      for role, p in t.roles():
        cells = _fmt_parts(p)
        lines.append(f'| {r.name} | {t.name} | {role} | ' + ' | '.join(f'`{x}`' if x else '' for x in cells)
                     + f" | {'; '.join(reg)} | {r.notes} |")
  lines += [
      '',
      '## Conventions',
      '',
      '* `hpt_released_code` is the released code\'s loss (`mix_actor.py`, `offline_loss_type=sft`):',
      '  `L = −Σ_{RL rows, t} Â ρ / (L · n) + sft_loss_coef · NLL`, with `n` the routed rows (the',
      '  rollouts of RL-routed questions plus one demonstration per SFT-routed question: the `rl`',
      '  term\'s demo rows carry `Â ≡ 0` and only count in `n`) and `NLL` the token mean pooled over',
      '  the demonstration tokens of SFT-routed questions. `sft_loss_coef` (default 1.0, as released)',
      '  scales the `sft` term only (in `hpt` too).',
  ]
  lines.append('')
  return '\n'.join(lines)
