"""BENCHMARKS.md sections whose measurements come from their own commands, not from ``run_all``.

* The LoRA / QLoRA memory table: ``python -m benchmarks.lora_memory`` compiles a 0.5B-parameter
  step three times (20 minutes on the 2-core Intel Xeon), so ``run_all`` renders the result that command
  wrote (``benchmarks/results/lora_memory.json``), with that run's host and date.
* The one-GPU check: ``python -m benchmarks.gpu_check`` runs only on a GPU.
* The analyses of earlier sessions, each measured on its own host: ``docs/performance.md``.

Each function returns the section's lines; a missing result says which command makes it.
"""

from __future__ import annotations

import json
import os

from benchmarks.lora_memory import RESULT_PATH as LORA_RESULT
from benchmarks.lora_memory import markdown as lora_markdown


def lora_lines(path: str = LORA_RESULT) -> list[str]:
    """The full fine-tuning vs LoRA vs QLoRA memory section, from ``lora_memory``'s JSON."""
    head = ["## Memory: full fine-tuning vs LoRA vs QLoRA (update step), Qwen2-0.5B shape", ""]
    if not os.path.exists(path):
        return head + [
            "Not run: `python -m benchmarks.lora_memory` writes it (20 minutes on the 2-core Intel Xeon).",
            "",
        ]
    with open(path) as f:
        r = json.load(f)
    rows = {x["mode"]: x for x in r["rows"]}
    full, lora, qlora = rows["full"], rows["lora"], rows["qlora"]
    share = lora["trainable_params"] / full["trainable_params"]
    peak_drop = 1 - lora["peak_gib"] / full["peak_gib"]
    return head + [
        f"`python -m benchmarks.lora_memory` (its own run, {r.get('date', 'date not recorded')}; host: "
        f"{r['host']}. Preset `{r['preset']}`, float32 params and compute, SFT update step with AdamW, "
        f"batch {r['batch']} × {r['seq']} tokens, layer remat `{r.get('remat', 'none')}`, LoRA "
        f"r={lora['rank']} α={2 * lora['rank']} on all seven projections of every layer, QLoRA's base in nf4 "
        "through qwix with blocks of 64 input rows). Abstract shapes only; the step is the trainer's jitted, "
        "donated `make_train_step`, measured with XLA's compiled memory analysis (peak ≈ arguments + outputs "
        "− aliased + temporaries).",
        "",
        lora_markdown(r),
        "",
        f"- The trainable state (adapters {share:.1%} of the parameters) and the optimiser state "
        f"({full['opt_state_gib']} GiB → {lora['opt_state_gib']} GiB) shrink as expected; the KL/DPO "
        "reference costs nothing more with adapters (the base with the adapters off), against a full copy "
        f"of the params ({full['param_gib']} GiB) with full fine-tuning.",
        "- At this batch the step's peak is dominated by activations and the chunked log-prob pass (the "
        f"temporaries, {lora['temp_gib']} GiB with LoRA), which adapters do not reduce: the peak falls "
        f"{peak_drop:.0%}. With `model.remat` and bf16 compute the temporaries shrink and the state's share "
        "grows.",
        f"- QLoRA stores the base in {qlora['param_gib']} GiB against LoRA's {lora['param_gib']}, not 8× "
        "less: XLA CPU stores `uint4` one byte per element (and the float32 scales of 64-row blocks add "
        "1/16), and CPU materialises each dequantised kernel before its matmul (temporaries "
        f"{qlora['temp_gib']} GiB against {lora['temp_gib']}). An accelerator backend that packs int4 and "
        "fuses dequantisation into the matmul is where QLoRA's saving shows.",
        "",
    ]


GPU_CHECK_LINES = [
    "## One-GPU check",
    "",
    "`python -m benchmarks.gpu_check --json gpu_check.json` (≤ 5 minutes on one GPU; exit status 1 when a "
    "check fails): the GRPO gradient on CPU and on the GPU (max per-leaf relative error ≤ 1e-4 at `highest` "
    "matmul precision, ≤ 2e-2 at the default, TF32), 5 bf16 SFT steps with finite decreasing loss, an Orbax "
    "round trip of the train state (bitwise), the update's MFU (qwen2-0.5b, bf16, 4 × 1024) against the "
    "measured and the datasheet peak, and the decode (32 × (128 + 128) tokens) against the HBM roofline. "
    "`--smoke` runs every section on CPU at toy sizes (`tests/test_gpu_check.py`). Not yet run on a GPU: "
    "none has been lent to a session so far.",
    "",
]

HISTORY_LINES = [
    "## Earlier measurements and what bounds each ratio",
    "",
    "The analyses of earlier sessions (what bounds the whole-step ratio, the update's response columns and "
    "shared prompts, the AVX2 restriction that did not reach the matmul libraries, and where PyTorch's "
    "update wins on the Intel Xeon), each with its own command and host, are in "
    "[docs/performance.md](docs/performance.md).",
    "",
]
