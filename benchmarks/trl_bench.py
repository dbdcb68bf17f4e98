"""The TRL side of ``benchmarks/rl_step_bench.py``; runs in its own venv (``.venv-trl``).

    .venv-trl/bin/python benchmarks/trl_bench.py      # task JSON on the first stdin line

TRL's ``GRPOTrainer`` (its own loop: ``transformers.Trainer.train``) on the model and tokenizer
saved in ``weights_dir`` (``model/``, ``tokenizer/``) by the upt_jax side, the same prompts and the same reward function:
``prompts`` prompts × ``num_generations`` completions of exactly ``new_tokens`` tokens
(``min_new_tokens`` = ``max_new_tokens``), temperature 1, no top-k/top-p, β = 0 (no reference
model), one iteration (no old-log-prob pass), ``loss_type="grpo"`` (sequence-mean-token-mean),
clip ε = 0.2, AdamW (lr 1e-5, no weight decay), global-norm clipping 1, fp32 on the CPU.

Steps are driven from the parent: before each optimiser step a callback waits for a line on stdin
(so the parent alternates the two sides), then the step's wall time (generation, reward, loss,
backward, optimiser) goes back as one line ``TRL_STEP {"step": i, "seconds": s}``. After the last
step: ``TRL_RESULT {"status": "ok", "versions": ...}``.
"""

from __future__ import annotations

import json
import sys
import time

STEP_PREFIX = "TRL_STEP "
RESULT_PREFIX = "TRL_RESULT "


def parity_reward(prompts, completions, **kw):
    """1 for a completion of an even number of characters, else 0 (cheap; varies within a group)."""
    return [float(len(c) % 2 == 0) for c in completions]


def main():
    import os
    import tempfile

    import datasets
    import torch
    import transformers
    import trl
    from transformers import TrainerCallback

    req = json.loads(sys.stdin.readline())
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores this process may run on (the parent's)
    torch.manual_seed(0)
    tok = transformers.AutoTokenizer.from_pretrained(os.path.join(req["weights_dir"], "tokenizer"))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.join(req["weights_dir"], "model"), dtype=torch.float32
    )
    data = datasets.Dataset.from_list([{"prompt": p} for p in req["prompts"]])
    steps = int(req["steps"])
    args = trl.GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_bench_"),
        per_device_train_batch_size=req["prompts_per_step"] * req["num_generations"],
        num_generations=req["num_generations"],
        max_completion_length=req["new_tokens"],
        generation_kwargs={"min_new_tokens": req["new_tokens"]},
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        num_iterations=1,
        epsilon=0.2,
        loss_type="grpo",
        learning_rate=1e-5,
        weight_decay=0.0,
        max_grad_norm=1.0,
        lr_scheduler_type="constant",
        max_steps=steps,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        shuffle_dataset=False,
    )

    class Lockstep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not sys.stdin.readline():  # the parent went away
                raise SystemExit(1)
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            print(
                STEP_PREFIX + json.dumps({"step": state.global_step, "seconds": time.perf_counter() - self.t0}),
                flush=True,
            )

    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=parity_reward,
        args=args,
        train_dataset=data,
        processing_class=tok,
        callbacks=[Lockstep()],
    )
    trainer.train()
    print(
        RESULT_PREFIX
        + json.dumps(
            {
                "status": "ok",
                "versions": {
                    "trl": trl.__version__,
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                },
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
