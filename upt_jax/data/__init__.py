"""Data: readers, prompt templates, tokenizers, synthetic tasks, bundled benchmarks.

Public API:
  DataConfig, FieldMap, DataError, ReadStats   reading configuration and bookkeeping
  load_records, make_dataset, load_dataset      rows → checked records → grain pipeline
  render_prompt, join, ZERO_TEMPLATE            prompt templates (plain, zero, chat)
  Tokenizer, load_tokenizer, char_tokenizer, save_char_tokenizer
  synthetic                                     the built-in arithmetic tasks (module)
  tasks                                         task families: the built-in ones registered, register_task (module)
  load_benchmark, benchmark_names, BENCHMARKS   the bundled evaluation sets
"""

from upt_jax.data import synthetic, tasks
from upt_jax.data.benchmark_sets import BENCHMARKS, benchmark_names, load_benchmark
from upt_jax.data.readers import (
    DataConfig,
    DataError,
    FieldMap,
    ReadStats,
    load_dataset,
    load_records,
    make_dataset,
)
from upt_jax.data.templates import ZERO_TEMPLATE, join, render_prompt
from upt_jax.data.tokenizer import Tokenizer, char_tokenizer, load_tokenizer, save_char_tokenizer

__all__ = [
    "BENCHMARKS",
    "DataConfig",
    "DataError",
    "FieldMap",
    "ReadStats",
    "Tokenizer",
    "ZERO_TEMPLATE",
    "benchmark_names",
    "char_tokenizer",
    "join",
    "load_benchmark",
    "load_dataset",
    "load_records",
    "load_tokenizer",
    "make_dataset",
    "render_prompt",
    "save_char_tokenizer",
    "synthetic",
    "tasks",
]
