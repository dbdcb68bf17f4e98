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

import dataclasses

from upt_jax.upge import _recipes_2025 as new
from upt_jax.upge._build import NONE as _NONE
from upt_jax.upge._build import group_norm, pref_recipe
from upt_jax.upge._build import rl as _rl
from upt_jax.upge._parts import KLPenalty, Parts, Recipe, Term, part


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
         std_eps: float = 1e-6, std_ddof: int = 0) -> Recipe:
  """GRPO (Shao et al. 2024): group-normalised advantage, PPO clip, seq-mean-token-mean.

  Optional KL to the reference model in the loss (``β · k3`` inside the
  per-sequence token mean, as in DeepSeekMath).
  ``std_eps``, ``std_ddof``: the ``ε`` and degrees of freedom of the group reward std
  (``ddof=0``: population std, as the paper; 1: Bessel's, as ``torch.std``).

  Batch: ``mask [B, T], rewards [B], old_logp [B, T]`` (+ ``ref_logp [B, T]`` with KL); ``group_size = G``.
  """
  kl = KLPenalty(kl_coef, kl_kind, 'loss') if kl_coef else None
  return Recipe('grpo', (Term('pg', rollout=_rl(
      (part('ppo_clip', eps_low=eps, eps_high=eps),), 'behaviour', group_norm(std_eps, std_ddof),
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
         dynamic_sampling: bool = False, std_eps: float = 1e-6, std_ddof: int = 0) -> Recipe:
  """DAPO (Yu et al. 2025): clip-higher, token-mean, group-normalised advantage.

  ``dynamic_sampling=True`` drops groups whose rewards are all equal (from the
  sum and the denominator) instead of over-sampling.
  ``std_eps``, ``std_ddof``: the ``ε`` and degrees of freedom of the group reward std
  (``ddof=0``: population std, as the paper; 1: Bessel's, as ``torch.std``).

  Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
  """
  p = _rl((part('ppo_clip', eps_low=eps_low, eps_high=eps_high),), 'behaviour',
          group_norm(std_eps, std_ddof))
  if dynamic_sampling:
    p = Parts(p.stabiliser, p.reference, p.advantage, p.aggregation, part('nonzero_variance'))
  return Recipe('dapo', (Term('pg', rollout=p),), 'Yu et al. 2025', 'mask [B, T], rewards [B], old_logp [B, T]; groups')


def gspo(eps_low: float = 3e-4, eps_high: float = 4e-4, std_eps: float = 1e-6,
         std_ddof: int = 0) -> Recipe:
  """GSPO (Zheng et al. 2025): sequence ratio ``s_i``, sequence clip, one term per sequence.

  ``π_ref`` is GSPO's length-normalised sequence reference (value ``s_i``,
  gradient ``s_i ∇log π``), aggregation seq-mean-token-mean (the token mean is
  the ``1/|y_i|`` of ``∇ log s_i``). With token-level advantages this is GSPO-token.
  ``std_eps``, ``std_ddof``: the ``ε`` and degrees of freedom of the group reward std
  (``ddof=0``: population std, as the paper; 1: Bessel's, as ``torch.std``).

  Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
  """
  return Recipe('gspo', (Term('pg', rollout=_rl(
      (part('gspo_clip', eps_low=eps_low, eps_high=eps_high),), 'gspo', group_norm(std_eps, std_ddof),
      'seq-mean-token-mean')),), 'Zheng et al. 2025', 'mask [B, T], rewards [B], old_logp [B, T]; groups')


def cispo(eps_low: float = 1e9, eps_high: float = 0.28, std_eps: float = 1e-6,
          std_ddof: int = 0) -> Recipe:
  """CISPO (MiniMax-M1, 2025): ``sg(clip(r)) Â ∇log π`` — weight clipped, gradient kept.
  ``std_eps``, ``std_ddof``: the ``ε`` and degrees of freedom of the group reward std
  (``ddof=0``: population std, as the paper; 1: Bessel's, as ``torch.std``).

  Batch: ``mask [B, T], rewards [B], old_logp [B, T]``; groups.
  """
  return Recipe('cispo', (Term('pg', rollout=_rl(
      (part('cispo', eps_low=eps_low, eps_high=eps_high),), 'current', group_norm(std_eps, std_ddof))),),
      'MiniMax 2025', 'mask [B, T], rewards [B], old_logp [B, T]; groups')


def rloo() -> Recipe:
  """RLOO (Ahmadian et al. 2024, Eq. 6): per-sequence REINFORCE with a leave-one-out baseline.

  ``L = −(1/B) Σ_i (r_i − mean_{j≠i} r_j) log π_θ(y_i)``, ``log π_θ(y_i) = Σ_t log π_θ(o_{i,t})``:
  ∇log π (no ratio, no clip), token sum per sequence, mean over sequences. (`new.rloo_ppo` is
  the PPO-clipped, token-mean form this recipe had before.)

  Batch: ``mask [B, T], rewards [B]``; groups.
  """
  return Recipe('rloo', (Term('pg', rollout=_rl(_NONE, 'current', part('rloo'), 'seq-mean-token-sum')),),
                'Ahmadian et al. 2024', 'mask [B, T], rewards [B]; groups')


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


def grpo_process(eps: float = 0.2, std_eps: float = 1e-6, std_ddof: int = 0) -> Recipe:
  """GRPO with process supervision (Shao et al. 2024, §4.1.3): per-step PRM rewards placed at
  step ends, normalised over the group's steps; ``Â_t`` = sum of the normalised rewards of the
  steps ending at or after ``t``; PPO clip, seq-mean-token-mean as GRPO. ``std_eps``,
  ``std_ddof``: the ``ε`` and degrees of freedom of the std over the group's steps.

  Batch: ``mask [B, T], old_logp [B, T], step_rewards [B, T], step_mask [B, T]``; groups.
  """
  return Recipe('grpo_process', (Term('pg', rollout=_rl(
      (part('ppo_clip', eps_low=eps, eps_high=eps),), 'behaviour', part('process', eps=std_eps, ddof=std_ddof or None),
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


def dpo(beta: float = 0.1, label_smoothing: float = 0.0) -> Recipe:
  """DPO (Rafailov et al. 2023), sigmoid loss with label smoothing: implicit advantage.

  Batch: ``mask [B, T], ref_logp [B, T]``; ``group_size=2`` rows per pair (chosen, rejected).
  """
  return pref_recipe('dpo', part('dpo', beta=beta, label_smoothing=label_smoothing), False,
                      'Rafailov et al. 2023', 'mask [B, T], ref_logp [B, T]')


def ipo(beta: float = 0.1) -> Recipe:
  """IPO (Azar et al. 2023, Eq. 17): ``(h − 1/(2β))²`` with ``h`` the difference of the chosen and
  rejected sequence log-ratios ``log π/π_ref`` (sums over tokens); implicit advantage, token sum.
  (`new.ipo_length_avg` is TRL's token-mean form, which this recipe was before.)

  Batch: ``mask [B, T], ref_logp [B, T]``; pairs as groups of 2.
  """
  return pref_recipe('ipo', part('ipo', beta=beta), False, 'Azar et al. 2023', 'mask [B, T], ref_logp [B, T]')


def simpo(beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0) -> Recipe:
  """SimPO (Meng et al. 2024): reference-free, length-normalised, margin ``γ``.

  Batch: ``mask [B, T]``; pairs as groups of 2.
  """
  return pref_recipe('simpo', part('simpo', beta=beta, gamma=gamma,
                                    label_smoothing=label_smoothing), True,
                      'Meng et al. 2024', 'mask [B, T]')


def orpo(lam: float = 0.1) -> Recipe:
  """ORPO (Hong et al. 2024, Eq. 6): ``mean_pairs [L_SFT + λ L_OR]``, the chosen NLL a token mean
  within each pair (the paper's ``1/m``), the odds from length-averaged log-probs. (The released
  code and TRL pool the NLL over the batch's chosen tokens instead.)

  Batch: ``mask [B, T]``; pairs as groups of 2.
  """
  return pref_recipe('orpo', part('orpo', lam=lam), True, 'Hong et al. 2024', 'mask [B, T]')


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


def luffy(eps: float = 0.2, shaping_gamma: float = 0.1, std_eps: float = 1e-6, std_ddof: int = 0) -> Recipe:
  """LUFFY (Yan et al. 2025): rollouts and a demonstration in one group.

  Advantages are group-normalised over the union (the demo is a member of its
  group); rollouts use the PPO clip with ``old_logp``; the demonstration uses
  ``π_ref ≡ 1`` and policy shaping ``f(π) = π/(π+γ)``, no clip; token-mean over
  all tokens.
  ``std_eps``, ``std_ddof``: the ``ε`` and degrees of freedom of the group reward std
  (``ddof=0``: population std, as the paper; 1: Bessel's, as ``torch.std``).

  Batch: ``mask [B, T], rewards [B], old_logp [B, T], is_demo [B]``; groups (e.g. ``n−1`` rollouts + 1 demo).
  """
  a = group_norm(std_eps, std_ddof)
  return Recipe('luffy', (Term(
      'pg',
      rollout=_rl((part('ppo_clip', eps_low=eps, eps_high=eps),), 'behaviour', a),
      demo=_rl((part('policy_shaping', gamma=shaping_gamma),), 'unit', a)),),
      'Yan et al. 2025', 'mask [B, T], rewards [B], old_logp [B, T], is_demo [B]; groups hold the demo')


def srft(eps: float = 0.2, sft_coef: float = 0.5, rl_coef: float = 0.1,
         threshold: float = 0.5, std_eps: float = 1e-6, std_ddof: int = 0) -> Recipe:
  """SRFT (Fu et al. 2025, Eq. 12): ``L = L_SFT^demo + L_RL^demo + L_RL^self``.

  ``H̄_i`` is the mean token entropy of the policy on row ``i`` (``batch['entropy']``,
  stop-gradient). Each term is a token mean over its own rows:

  * ``sft`` (demos): NLL weighted by ``w_SFT = sft_coef · sg(exp(−H̄))``.
  * ``rl_demo`` (demos): off-policy RL with ``π_ref ≡ 1`` (ratio ``π_θ``), PPO clip,
    advantage group-normalised over the question's rollouts *and* its demo.
  * ``rl_self`` (rollouts): ``±1`` REINFORCE (reward > ``threshold``: +1, else −1),
    ∇log π, no ratio; positives weighted by ``w_RL = rl_coef · sg(exp(+H̄))``.

  ``std_eps``, ``std_ddof``: the ``rl_demo`` advantage's group std (see `grpo`).

  Batch: ``mask [B, T], rewards [B], entropy [B, T], is_demo [B]``; groups = rollouts + demo.
  """
  return Recipe('srft', (
      Term('sft', demo=_rl((part('entropy_weight', coef=sft_coef, form='exp_neg'),),
                           'current', part('one'))),
      Term('rl_demo', demo=_rl((part('ppo_clip', eps_low=eps, eps_high=eps),), 'unit',
                               group_norm(std_eps, std_ddof, rows='all'))),
      Term('rl_self', rollout=_rl((part('entropy_weight', coef=rl_coef, form='exp',
                                        positive_only=True, threshold=threshold),),
                                  'current', part('sign', threshold=threshold))),
  ), 'Fu et al. 2025', 'mask [B, T], rewards [B], entropy [B, T], is_demo [B]; groups = rollouts + demo')


def hpt(variant: str = 'paper_text', gamma: float = 0.0, eps: float = 0.2,
        max_len: int | None = None, gate: str = 'hard', offline: str = 'sft',
        shaping_gamma: float = 0.1, sft_loss_coef: float = 1.0, std_eps: float = 1e-6,
        std_ddof: int = 0, entropy_coef: float = 0.0, **gate_kwargs) -> Recipe:
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

  ``std_eps``, ``std_ddof``: the group std of ``paper_text``'s advantages (see `grpo`;
  ``released_code`` divides by no std).

  ``entropy_coef`` ``c > 0`` adds a term ``entropy_bonus = −c · Σ_{routed rows, t} H_t / Σ_{routed
  rows, t} 1``: the entropy token mean pooled over every routed row (the rollouts of RL-routed
  questions and the demonstrations of SFT-routed ones), as the released code's
  ``entropy_coeff`` (``masked_mean(entropy, response_mask)`` over the micro-batch's rows; it
  ran 0.001). Its policy-gradient part is 0 (advantage ≡ 0); only the bonus carries gradient.

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
    rl = _rl((part('ppo_clip', eps_low=eps, eps_high=eps),), 'behaviour', group_norm(std_eps, std_ddof))
    sf = _rl(_NONE, 'current', part('one'))
    od = _rl((part('policy_shaping', gamma=shaping_gamma),), 'unit', group_norm(std_eps, std_ddof, rows='all'))
    terms = [Term('rl', rollout=Parts(rl.stabiliser, rl.reference, rl.advantage, rl.aggregation, g_rl))]
    if offline in ('sft', 'both'):
      terms.append(Term('sft', demo=Parts(sf.stabiliser, sf.reference, sf.advantage, sf.aggregation, g_sft),
                        coef=sft_loss_coef))
    if offline in ('rl', 'both'):
      terms.append(Term('rl_demo', demo=Parts(od.stabiliser, od.reference, od.advantage, od.aggregation,
                                              g_sft)))
    name = 'hpt' if offline == 'sft' else f'hpt_offline_{offline}'
    return _with_entropy_bonus(Recipe(name, tuple(terms), 'Lv et al. 2025 (paper text, Eq. 11)', notes),
                               entropy_coef, g_rl, g_sft)
  if variant == 'released_code':
    if offline != 'sft':
      raise ValueError(f"HPT offline={offline!r} is defined for variant='paper_text' only")
    rl = _rl(_NONE, 'behaviour', part('dr_grpo'), 'seq-mean-token-sum-norm', max_len=max_len)
    # a routed demo counts one row in the RL denominator and adds nothing to its sum
    seat = _rl(_NONE, 'current', part('one', value=0.0), 'seq-mean-token-sum-norm', max_len=max_len)
    sf = _rl(_NONE, 'current', part('one'))
    return _with_entropy_bonus(Recipe('hpt_released_code', (
        Term('rl', rollout=Parts(rl.stabiliser, rl.reference, rl.advantage, rl.aggregation, g_rl),
             demo=Parts(seat.stabiliser, seat.reference, seat.advantage, seat.aggregation, g_sft)),
        Term('sft', demo=Parts(sf.stabiliser, sf.reference, sf.advantage, sf.aggregation, g_sft),
             coef=sft_loss_coef),
    ), 'Lv et al. 2025 (released code)', notes), entropy_coef, g_rl, g_sft)
  raise ValueError(f"unknown HPT variant {variant!r}: 'paper_text' or 'released_code'")


def _with_entropy_bonus(recipe: Recipe, coef: float, g_rl, g_sft) -> Recipe:
  """``recipe`` plus HPT's ``entropy_bonus`` term (token mean over every routed row), when ``coef``."""
  if not coef:
    return recipe
  zero = _rl(_NONE, 'current', part('one', value=0.0))
  term = Term('entropy_bonus', rollout=Parts(zero.stabiliser, zero.reference, zero.advantage, zero.aggregation, g_rl),
              demo=Parts(zero.stabiliser, zero.reference, zero.advantage, zero.aggregation, g_sft),
              entropy_coef=coef)
  return dataclasses.replace(recipe, terms=recipe.terms + (term,))


RECIPES = {
    'sft': sft, 'reinforce': reinforce, 'ppo': ppo, 'grpo': grpo, 'dr_grpo': dr_grpo,
    'dapo': dapo, 'gspo': gspo, 'cispo': cispo, 'rloo': rloo,
    'reinforce_pp': reinforce_pp, 'remax': remax, 'rft': rft, 'grpo_process': grpo_process, 'dpo': dpo, 'ipo': ipo,
    'simpo': simpo, 'orpo': orpo, 'distill_fkl': distill_fkl,
    'distill_on_policy': distill_on_policy, 'luffy': luffy, 'srft': srft, **new.RECIPES, 'hpt': hpt,
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
