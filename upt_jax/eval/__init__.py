"""Evaluation: pass@k / avg@k over synthetic tiers and bundled benchmarks, tables and plots.

Public API:
  pass_at_k, pass_at_k_per_question, mean_pass_at_k    unbiased pass@k (Chen et al. 2021)
  avg_at_k, default_ks                                 mean accuracy over k samples; 1, 2, 4, .., k
  MeanStd, mean_std, aggregate_seeds, group_average    mean ± std over seeds, ID/OOD averages
  evaluate, SuiteResult                                sample k per question, verify, per-suite results
  synthetic_suites, benchmark_suites, data_suites      {name: records} for evaluate (data_suites: the user's files)
  results_table, suite_table, plot_pass_at_k           markdown tables, pass@k PNG
  write_json, read_json, results_to_json               JSON output
  load_hf_model                                        a Hugging Face directory's model and tokenizer

Evaluation never imports training (issue #19): a run directory's model is
`upt_jax.train.run_model.load_run_model`, the ``upt eval`` command `upt_jax.eval_cli` (it rebuilds
a run's model), the method comparison `upt_jax.studies.comparison` (it trains its arms).
"""

from upt_jax.eval.evaluate import (
    DEFAULT_EVAL_SEED,
    SuiteResult,
    benchmark_suites,
    evaluate,
    suite_key,
    synthetic_suites,
)
from upt_jax.eval.metrics import (
    MeanStd,
    aggregate_seeds,
    avg_at_k,
    default_ks,
    group_average,
    mean_pass_at_k,
    mean_std,
    pass_at_k,
    pass_at_k_per_question,
)
from upt_jax.eval.report import (
    metric_value,
    metric_values,
    plot_pass_at_k,
    read_json,
    results_table,
    results_to_json,
    suite_table,
    write_json,
)
from upt_jax.eval.inputs import data_suites, load_hf_model

__all__ = [
    "DEFAULT_EVAL_SEED",
    "MeanStd",
    "SuiteResult",
    "aggregate_seeds",
    "avg_at_k",
    "benchmark_suites",
    "data_suites",
    "default_ks",
    "evaluate",
    "group_average",
    "load_hf_model",
    "mean_pass_at_k",
    "mean_std",
    "metric_value",
    "metric_values",
    "pass_at_k",
    "pass_at_k_per_question",
    "plot_pass_at_k",
    "read_json",
    "results_table",
    "results_to_json",
    "suite_key",
    "suite_table",
    "synthetic_suites",
    "write_json",
]
