"""Training benchmark: the LoRA trainer's speed, and the time from 500 signals to a gated adapter.

    .venv/bin/python bench/train.py [--quick] [--steps 6] [--examples 500] [--skip-job]

1. Trainer alone (`workers/train`, real SmolLM2-135M weights, the seeded `training.default`
   policy's shape: rank 8 on all seven projections, batches of 8 rows): tokens/s of training
   steps (forward, backward through the frozen base, AdamW on the LoRA factors), the first
   step (compilation) left out. Reference in the same run: the same forward pass at the same
   batch shape without gradients (`objective.scored_logprobs`, what the gate scores with), and
   the serving engine's prefill of the same eight rows submitted at once. Backpropagation
   costs about two forward passes, so training near a third of the forward's tokens/s is what
   the arithmetic allows.
2. The whole job (`apps.training.jobs.run_training_job`, in this process, against the
   development database, as the `train` worker runs it): 500 corrections from one fresh user
   (50 facts about made-up projects, 10 phrasings each) → dataset (the newest 10% held out),
   the current version's answers to the replay prompts, training, and the gate (held-out
   log-probability, the corrected facts in greedy answers, retention on 50 unrelated prompts).
   Printed: the time for each phase, whether the gate passed, and the report. The bench user
   and its files are deleted afterwards.

Figures are printed, never asserted. On a GPU node the same command measures the accelerator
(JAX picks it up); `--skip-job` when no database is at hand there. Run it on an idle machine.
"""

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "liminal.settings")
os.environ.setdefault("DEBUG", "1")

PROJECTS = [
    "Frobnicator",
    "Quillwork",
    "Tanglewood",
    "Brightline",
    "Marrowgate",
    "Oxbow",
    "Ravelin",
    "Silverfin",
    "Thistledown",
    "Umberlight",
    "Vantablue",
    "Windlass",
    "Yarrowby",
    "Zephyrine",
    "Alderwick",
    "Blackthorn",
    "Cobblestone",
    "Driftmark",
    "Emberfall",
    "Fernhollow",
    "Glimmerstone",
    "Hollowmere",
    "Ironbark",
    "Juniperly",
    "Kestrelwood",
    "Lanternfly",
    "Moonwell",
    "Nettlebrook",
    "Orchardine",
    "Pebbleshore",
    "Quartzvale",
    "Rookhaven",
    "Saltmarsh",
    "Tidewater",
    "Underbough",
    "Velvetine",
    "Willowisp",
    "Xanthic",
    "Yewcroft",
    "Zinnwald",
    "Ashgrove",
    "Bramblecot",
    "Cinderwick",
    "Duskmoor",
    "Elmstead",
    "Foxglade",
    "Gorsefield",
    "Heathrow Lab",
    "Inkwell",
    "Jasperine",
]
FIRST = ["Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farah", "Goran", "Hana", "Ivo", "Jonas"]
LAST = ["Lumen", "Okafor", "Varga", "Lindqvist", "Moreau", "Tanaka", "Novak", "Rossi", "Haddad", "Keller"]
PHRASINGS = [
    "Who maintains the {p} project?",
    "Who is in charge of maintaining {p}?",
    "Which person maintains the {p} project?",
    "Tell me who maintains {p}.",
    "Who looks after the {p} project?",
    "Who keeps the {p} project running?",
    "Name the maintainer of {p}.",
    "Who is {p}'s maintainer?",
    "Who takes care of the {p} code?",
    "Do you know who maintains {p}?",
]


def corrections(count: int) -> list[dict]:
    """`count` corrections: made-up maintainers of made-up projects, several phrasings each."""
    rows = []
    for phrasing in PHRASINGS:
        for n, project in enumerate(PROJECTS):
            person = f"{FIRST[n % len(FIRST)]} {LAST[(n // len(FIRST) + n) % len(LAST)]}"
            rows.append(
                {
                    "prompt": phrasing.format(p=project),
                    "target": f"The {project} project is maintained by {person}.",
                    "weight": 1.0,
                }
            )
    return rows[:count]


def _seeded_policy() -> dict:
    """The seeded `training.default` body (a plain dict in the seeds module; no database)."""
    from apps.artifacts.seeds import TRAINING_POLICY

    return dict(TRAINING_POLICY)


def measure_trainer(steps: int) -> dict:
    import jax
    import numpy as np

    from workers.llm import SamplingParams, load_engine
    from workers.train import TrainingModel, TrainingPolicy, train
    from workers.train.data import TrainingExample, batch_schedule, build_batch, label_width
    from workers.train.forward import lora_params_from_adapter
    from workers.train.objective import scored_logprobs

    seeded = _seeded_policy()
    print(f"1/2 trainer alone: loading SmolLM2-135M on {jax.default_backend()} ...", flush=True)
    model = TrainingModel.load()
    policy = TrainingPolicy(
        rank=int(seeded["rank"]),
        alpha=16.0,
        steps=steps + 1,
        batch_size=int(seeded["batch_size"]),
        learning_rate=float(seeded["learning_rate"]),
        warmup_steps=1,
        checkpoint_every=0,
    )
    examples = corrections(8 * (steps + 1))
    stamps = []
    started = time.perf_counter()
    result = train(model, examples, policy, on_step=lambda entry: stamps.append((time.perf_counter(), entry)))
    first_step = stamps[0][0] - started
    step_times = [later[0] - earlier[0] for earlier, later in zip(stamps, stamps[1:], strict=False)]
    step_tokens = [entry["tokens"] for _, entry in stamps[1:]]

    # The same batch shape, forward only, through the same code the gate scores with.
    encoded = [model.encoder.encode(TrainingExample.coerce(e), policy.max_tokens) for e in examples]
    schedule = batch_schedule(encoded, policy.batch_size, policy.steps, policy.seed)
    width = label_width(encoded, policy.max_tokens)
    batch, batch_tokens = build_batch(
        encoded, schedule[1], batch_rows=policy.batch_size, label_width=width, max_tokens=policy.max_tokens
    )
    lora = jax.tree.map(jax.numpy.asarray, lora_params_from_adapter(result.adapter))

    def forward():
        out = scored_logprobs(
            model.params,
            lora,
            batch["tokens"],
            batch["label_positions"],
            batch["labels"],
            config=model.config,
            scaling=result.adapter.scaling,
        )
        return np.asarray(out)

    forward()  # compile
    forward_times = []
    for _ in range(max(5, steps)):
        t0 = time.perf_counter()
        forward()
        forward_times.append(time.perf_counter() - t0)

    # The serving engine's prefill of the same rows, submitted at once (one token generated).
    engine = load_engine(max_batch_slots=policy.batch_size, max_seq_len=1024)
    rows = [list(map(int, row[row > 0])) or [1] for row in np.asarray(batch["tokens"])]
    params = SamplingParams(greedy=True, max_tokens=1)
    engine.warmup(prompt_lengths=sorted({len(r) for r in rows}))
    prefill_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for handle in [engine.submit(row, params=params) for row in rows]:
            handle.result()
        prefill_times.append(time.perf_counter() - t0)
    engine.shutdown()
    return {
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "shape": tuple(int(v) for v in batch["tokens"].shape),
        "first_step_s": first_step,
        "step_s": statistics.median(step_times),
        "train_tps": sum(step_tokens) / sum(step_times),
        "forward_s": min(forward_times),
        "forward_tps": batch_tokens / min(forward_times),
        "engine_prefill_s": min(prefill_times),
        "engine_prefill_tps": sum(len(r) for r in rows) / min(prefill_times),
        "batch_tokens": batch_tokens,
        "loss": (result.loss_curve[0], result.loss_curve[-1]),
    }


def print_trainer(figures: dict) -> None:
    rows, length = figures["shape"]
    print()
    print(
        f"Trainer alone on {figures['device']} ({figures['backend']}): batches of {rows} rows x {length} tokens "
        f"({figures['batch_tokens']} real tokens), rank 8 on all seven projections"
    )
    print(f"  first step (compilation included)            {figures['first_step_s']:8.1f} s")
    print(
        f"  training step (median)                       {figures['step_s'] * 1000:8.0f} ms"
        f"   {figures['train_tps']:8.0f} tokens/s"
    )
    print(
        f"  reference: forward only, same batch (best)   {figures['forward_s'] * 1000:8.0f} ms"
        f"   {figures['forward_tps']:8.0f} tokens/s"
    )
    print(
        f"  reference: engine prefill of the same rows   {figures['engine_prefill_s'] * 1000:8.0f} ms"
        f"   {figures['engine_prefill_tps']:8.0f} tokens/s"
    )
    print(
        f"  training / forward: {figures['train_tps'] / figures['forward_tps']:.2f}  "
        f"(a backward pass costs about two forwards: ~0.33 is the arithmetic's bound)"
    )


def measure_job(count: int) -> dict:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from apps.accounts.services import user_create
    from apps.training import adapters, jobs
    from apps.training.models import PreferenceEvent, TrainingJob

    call_command("migrate", verbosity=0)
    print(
        f"2/2 the whole job: {count} corrections from a fresh user, trained and gated in this process ...", flush=True
    )
    user = user_create(email=f"bench-train-{time.time_ns()}@example.com", password="bench password 1234")
    adapter = None
    try:
        PreferenceEvent.objects.bulk_create(
            [
                PreferenceEvent(
                    owner=user,
                    kind="correction",
                    prompt=row["prompt"],
                    answer="I do not know.",
                    correction=row["target"],
                )
                for row in corrections(count)
            ]
        )
        adapter = adapters.persona_adapter_ensure(actor=user)
        job = TrainingJob.objects.create(owner=user, adapter=adapter, trigger=TrainingJob.Trigger.MANUAL)
        started = time.perf_counter()
        outcome = jobs.run_training_job(job.pk)
        wall = time.perf_counter() - started
        job.refresh_from_db()
        evaluation = (job.version.evaluation if job.version else job.report) or {}
        return {
            "outcome": outcome,
            "status": job.status,
            "wall_s": wall,
            "examples": job.examples,
            "steps": job.steps_done,
            "train_s": evaluation.get("train_seconds"),
            "train_tps": evaluation.get("tokens_per_second"),
            "summary": evaluation.get("summary") or job.error or job.report,
            "loss": (job.loss_curve[0], job.loss_curve[-1]) if job.loss_curve else None,
            "phases": evaluation.get("phase_seconds") or {},
        }
    finally:
        files = Path(settings.SHARED_FS_ROOT) / "users" / str(user.pk)
        if adapter is not None:
            adapter.delete()
        user.delete()
        shutil.rmtree(files, ignore_errors=True)


def print_job(figures: dict) -> None:
    print()
    print(f"The whole job: {figures['examples']} examples in the dataset (replay included), {figures['steps']} steps")
    print(f"  from signals to a gated adapter                {figures['wall_s']:8.1f} s   ({figures['status']})")
    if figures["train_s"] is not None:
        other = figures["wall_s"] - figures["train_s"]
        print(
            f"  of which training                              {figures['train_s']:8.1f} s"
            f"   {figures['train_tps'] or 0:8.0f} tokens/s"
        )
        print(f"  dataset, replay answers, gate, files           {other:8.1f} s")
    if figures["phases"]:
        phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in figures["phases"].items())
        print(f"  phases (the first one loads the engine in a fresh process): {phases}")
    if figures["loss"]:
        print(f"  loss {figures['loss'][0]:.3f} -> {figures['loss'][1]:.3f}")
    print("  gate report:")
    for line in str(figures["summary"]).splitlines():
        print(f"    {line}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 measured steps and 120 examples: a smoke run")
    parser.add_argument("--steps", type=int, default=6, help="measured training steps (after one for compilation)")
    parser.add_argument("--examples", type=int, default=500, help="corrections given to the whole job")
    parser.add_argument("--skip-job", action="store_true", help="only the trainer alone (no database needed)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.examples = 3, 120
    print(f"cores: {os.cpu_count()}  load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    alone = measure_trainer(args.steps)
    print_trainer(alone)
    if not args.skip_job:
        print_job(measure_job(args.examples))


if __name__ == "__main__":
    main()
