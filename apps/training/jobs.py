"""One training job, run on a `train` worker: dataset, replay, training, the gate, promotion.

Thin over `workers.train` (the trainer and the gate's statistics) and the training services.
A job delivered twice resumes from its checkpoint and never makes two versions: a version is
keyed on (adapter, dataset hash).
"""

import hashlib
import json
import logging
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.artifacts.selectors import global_artifact
from apps.training import adapters, datasets, selectors, skills
from apps.training.models import AdapterVersion, TrainingJob

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
REPLAY_PROMPTS = Path(__file__).resolve().parents[2] / "workers" / "train" / "replay_prompts.v1.json"
ANSWER_TOKENS = 48

_lock = threading.Lock()
_model = None


def _training_model():
    global _model
    with _lock:
        if _model is None:
            from workers.train import TrainingModel

            _model = TrainingModel.load(settings.MODEL_PATH or None)
        return _model


def generation_engine():
    """Greedy answers for replay, retention and the fact checks come from this process's one
    engine, the one chat answers use where both run in one worker: two engines in a process
    fight over the cores (their kernels spin-wait for partner threads), and the candidate's
    rows then simply join the chat's decode batches."""
    from apps.conversations.engine_runtime import get_engine

    return get_engine()


def _greedy(engine, prompts: list[str], adapter_name: str | None) -> list[tuple[str, bool]]:
    """(answer, finished on its own) for each prompt, under an adapter or the base."""
    from workers.llm import SamplingParams

    params = SamplingParams(greedy=True, max_tokens=ANSWER_TOKENS)
    adapters_ = [(adapter_name, 1.0)] if adapter_name else []
    handles = [
        engine.submit(engine.render_chat([{"role": "user", "content": p}]), params=params, adapters=adapters_)
        for p in prompts
    ]
    return [(h.result().text.strip(), h.result().finish_reason == "stop") for h in handles]


def _current_answers(engine, prompts: list[str], parent, adapter_name: str | None) -> dict[str, tuple[str, bool]]:
    """prompt -> (greedy answer, finished) of the version jobs build on, for replay and retention.
    They depend only on the model, that version and the prompt, so they are kept on the shared
    file system: every user's first job asks the base model the same prompts."""
    key = hashlib.sha256(
        json.dumps(
            [settings.SERVED_MODEL_ID, f"{parent.pk}:{parent.checksum}" if parent else "base", ANSWER_TOKENS]
        ).encode()
    ).hexdigest()[:32]
    path = Path(settings.SHARED_FS_ROOT) / "cache" / "current-answers" / f"{key}.json"
    try:
        known = {p: tuple(a) for p, a in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        known = {}
    missing = [p for p in dict.fromkeys(prompts) if p not in known]
    if missing:
        known.update(zip(missing, _greedy(engine, missing, adapter_name), strict=True))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{threading.get_ident()}.tmp")
        partial.write_text(json.dumps(known))
        partial.replace(path)  # atomic: a concurrent job reads the old file or this one
    return {p: known[p] for p in prompts}


def _policy() -> dict:
    artifact = global_artifact(kind="policy.training", name="training.default")
    return dict(artifact.body) if artifact is not None else {}


def _stale(job: TrainingJob, now=None) -> bool:
    """A running job whose heartbeat stopped: its worker died (the heartbeat runs in its own
    thread, so a long step or the gate never looks like death)."""
    beat = job.heartbeat_at or job.started_at
    return beat is None or ((now or timezone.now()) - beat).total_seconds() > settings.TRAINING_STALE_AFTER_S


class _Heartbeat:
    """Refreshes a running job's heartbeat every quarter of the stale limit until stopped."""

    def __init__(self, job_id):
        self._job_id = job_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self):
        from django.db import connection

        try:
            while not self._stop.wait(settings.TRAINING_STALE_AFTER_S / 4):
                TrainingJob.objects.filter(pk=self._job_id, status=TrainingJob.Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        finally:
            connection.close()


class _Phases:
    """Which phase a running job is in (shown on the Adapters page) and how long each took."""

    def __init__(self, job: TrainingJob):
        self._job = job
        self.seconds: dict[str, float] = {}
        self._current, self._since = None, time.monotonic()

    def enter(self, name: str) -> None:
        self._close()
        self._current, self._since = name, time.monotonic()
        self._job.report = {"phase": name}
        self._job.save(update_fields=["report"])

    def _close(self) -> None:
        if self._current is not None:
            self.seconds[self._current] = round(time.monotonic() - self._since, 1)

    def done(self) -> dict[str, float]:
        self._close()
        self._current = None
        return dict(self.seconds)


def _claim(job_id) -> TrainingJob | None:
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().select_related("adapter", "owner").filter(pk=job_id).first()
        if job is None:
            return None
        if job.status == TrainingJob.Status.QUEUED or (job.status == TrainingJob.Status.RUNNING and _stale(job)):
            job.status = TrainingJob.Status.RUNNING
            job.attempts += 1
            job.started_at = job.started_at or timezone.now()
            job.heartbeat_at = timezone.now()
            job.save(update_fields=["status", "attempts", "started_at", "heartbeat_at"])
            return job
    return None


def _finish(job: TrainingJob, status: str, **fields) -> str:
    for name, value in fields.items():
        setattr(job, name, value)
    job.status = status
    job.finished_at = timezone.now()
    job.save()
    return status


def run_training_job(job_id) -> str:
    job = _claim(job_id)
    if job is None:
        return "skipped"
    try:
        with _Heartbeat(job.pk):
            return _run(job)
    except Exception as exc:
        logger.exception("Training job %s failed", job.pk)
        return _finish(job, TrainingJob.Status.FAILED, error=f"{exc.__class__.__name__}: {exc}")


def reap_stalled_jobs(*, now=None) -> list[str]:
    """Beat's check for jobs whose worker died: each is sent again, and the next `train` worker
    resumes it from its checkpoint; after MAX_ATTEMPTS deaths it fails with that reason. A job
    still queued TRAINING_REQUEUE_AFTER_S after its message was sent is sent again too, since the
    broker may have lost the message (a Valkey crash keeps only its last snapshot); a job that was
    only waiting its turn gets a duplicate, which `_claim` turns away."""
    now = now or timezone.now()
    resent = []
    for job in TrainingJob.objects.filter(status=TrainingJob.Status.RUNNING):
        if not _stale(job, now):
            continue
        if job.attempts >= MAX_ATTEMPTS:
            _finish(job, TrainingJob.Status.FAILED, error=f"The training worker stopped {job.attempts} times.")
            continue
        adapters.training_job_send(job, now=now)
        resent.append(str(job.pk))
    unsent_since = now - timedelta(seconds=settings.TRAINING_REQUEUE_AFTER_S)
    waiting = TrainingJob.objects.filter(status=TrainingJob.Status.QUEUED).filter(
        Q(sent_at__lt=unsent_since) | Q(sent_at__isnull=True, created_at__lt=unsent_since)
    )
    for job in waiting:
        adapters.training_job_send(job, now=now)
        resent.append(str(job.pk))
    return resent


def _run(job: TrainingJob) -> str:
    from workers.train import CheckpointMismatchError, TrainingPolicy, target_logprobs, train
    from workers.train.gate import evaluate_gate, retention_prompts, retention_prompts_version

    phases = _Phases(job)
    phases.enter("dataset")
    policy = _policy()
    model = _training_model()
    engine = generation_engine()
    tokenizer = model.tokenizer if hasattr(model, "tokenizer") else engine.tokenizer
    # A skill adapter learns from its cluster's signals only (the owner's own); a persona
    # adapter from everything the owner told the platform.
    event_ids = None
    if job.adapter.body.get("scope") == "skill":
        event_ids = skills.cluster_event_ids(cluster_id=job.adapter.body.get("cluster_id"), owner=job.owner)
    examples = datasets.training_examples(
        actor=job.owner,
        count_tokens=lambda e: len(tokenizer.encode(e["prompt"] + " " + e["target"])),
        event_ids=event_ids,
    )
    if len(examples) < int(policy.get("min_examples", 8)):
        return _finish(
            job,
            TrainingJob.Status.SKIPPED,
            examples=len(examples),
            report={"reason": f"{len(examples)} examples; at least {policy.get('min_examples', 8)} are needed."},
        )
    gate_policy = policy.get("gate") or {}
    train_set, held_out = datasets.split_held_out(
        examples, float(gate_policy.get("held_out_fraction", 0.1)), int(gate_policy.get("min_held_out", 8))
    )

    # The served version, unless it (or one it was built on) learnt from a forgotten signal.
    parent = selectors.training_parent(adapter=job.adapter)
    current_name = None
    if parent is not None:
        current_name = f"job-current-{job.adapter_id}"
        engine.ensure_adapter(current_name, parent.fs_dir, version=parent.version)

    # What the current version answers and how sure it is, before training: replay examples to
    # mix in, and the retention and held-out baselines the gate compares the candidate with.
    phases.enter("current")
    replay_share = float(policy.get("replay_fraction", 0.5))
    replay_prompts = json.loads(REPLAY_PROMPTS.read_text())["prompts"]
    wanted = min(len(replay_prompts), round(len(train_set) * replay_share / max(1e-6, 1 - replay_share)))
    retention = retention_prompts()
    answers = _current_answers(engine, [*replay_prompts[:wanted], *retention], parent, current_name)
    # Each replay prompt is used once, so with more signals than the set's 24 prompts the mix
    # falls below the policy's share (bench/train.py: 24 against 441 corrections, and the
    # candidate forgot unrelated answers). Repeating the prompts to restore the share failed
    # the retention check on 40 corrections too; a larger replay set is the fix, not repeats.
    replay = [
        {"prompt": prompt, "target": answers[prompt][0], "weight": 1.0, "replay": True}
        for prompt in replay_prompts[:wanted]
        if answers[prompt][1] and answers[prompt][0]
    ]
    retention_examples = [{"prompt": p, "target": answers[p][0]} for p in retention if answers[p][0]]
    held = [{"prompt": e["prompt"], "target": e["target"]} for e in held_out]
    parent_adapter = None
    if parent is not None:
        from workers.llm import load_peft_adapter

        parent_adapter = load_peft_adapter(parent.fs_dir, engine.config)
    held_out_current = target_logprobs(model, held, parent_adapter)
    retention_current = target_logprobs(model, retention_examples, parent_adapter)
    dataset = train_set + replay
    job_dir = datasets.dataset_dir(user_id=job.owner_id, adapter_id=job.adapter_id, job_id=job.pk)
    _, digest = datasets.dataset_write(user_id=job.owner_id, adapter_id=job.adapter_id, job_id=job.pk, examples=dataset)
    existing = AdapterVersion.objects.filter(adapter=job.adapter, dataset_hash=digest).first()
    if existing is not None:
        return _finish(job, _job_status(existing), version=existing, dataset_hash=digest, report=existing.evaluation)

    steps = int(policy.get("max_steps", 30))
    training_policy = TrainingPolicy.from_dict(
        {
            "rank": int(job.adapter.body.get("rank", policy.get("rank", 8))),
            "alpha": float(job.adapter.body.get("alpha", 16.0)),
            "steps": steps,
            "batch_size": int(policy.get("batch_size", 8)),
            "learning_rate": float(policy.get("learning_rate", 2e-3)),
            "warmup_steps": max(1, steps // 10),
            "time_budget_s": policy.get("time_budget_s"),
            "checkpoint_every": int(policy.get("checkpoint_every", 5)),
        }
    )
    number = (
        AdapterVersion.objects.filter(adapter=job.adapter)
        .order_by("-version")
        .values_list("version", flat=True)
        .first()
        or 0
    ) + 1
    out_dir = job_dir.parent.parent / f"v{number:04d}"
    job.dataset_hash, job.examples, job.steps_total = digest, len(dataset), steps
    job.save(update_fields=["dataset_hash", "examples", "steps_total"])

    def progress(entry: dict) -> None:
        # By step number: a resumed run repeats the steps after its last checkpoint.
        job.loss_curve = [*job.loss_curve[: int(entry["step"]) - 1], round(float(entry["loss"]), 5)]
        job.steps_done = len(job.loss_curve)
        job.heartbeat_at = timezone.now()
        job.save(update_fields=["loss_curve", "steps_done", "heartbeat_at"])

    phases.enter("training")
    plain = [{k: v for k, v in e.items() if k in ("prompt", "target", "rejected", "weight")} for e in dataset]
    checkpoints = job_dir / "checkpoints"
    try:
        result = train(
            model,
            plain,
            training_policy,
            parent=parent.fs_dir if parent else None,
            checkpoint_dir=checkpoints,
            adapter_dir=out_dir,
            on_step=progress,
        )
    except CheckpointMismatchError:
        shutil.rmtree(checkpoints, ignore_errors=True)
        job.loss_curve = []
        result = train(
            model,
            plain,
            training_policy,
            parent=parent.fs_dir if parent else None,
            checkpoint_dir=checkpoints,
            adapter_dir=out_dir,
            on_step=progress,
        )
    if not result.completed and result.stop_reason != "time_budget":
        return _finish(job, TrainingJob.Status.FAILED, error=f"Training stopped: {result.stop_reason}.")

    phases.enter("gate")
    candidate_name = f"job-candidate-{job.pk}"
    engine.load_adapter(candidate_name, out_dir)
    # Only a correction states a fact the candidate must now say; a liked answer is a style
    # to lean towards (the held-out likelihood check judges that), not words to repeat.
    facts = [e for e in held_out if e.get("kind") == "correction"]
    fact_answers = _greedy(engine, [e["prompt"] for e in facts], candidate_name)
    report = evaluate_gate(
        held_out_candidate=target_logprobs(model, held, result.adapter),
        held_out_current=held_out_current,
        fact_checks=[(e["target"], answer) for e, (answer, _) in zip(facts, fact_answers, strict=True)],
        retention_candidate=target_logprobs(model, retention_examples, result.adapter),
        retention_current=retention_current,
        min_held_out=int(gate_policy.get("min_held_out", 8)),
        retention_ratio=1 - float(gate_policy.get("max_regression", 0.05)),
        retention_set=retention_prompts_version(),
    )
    engine.evict_adapter(candidate_name)

    weights = out_dir / "adapter_model.safetensors"
    checksum = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.exists() else ""
    evaluation = {
        **report.to_dict(),
        "summary": report.summary(),
        "loss_curve": result.loss_curve,
        "tokens_per_second": result.tokens_per_second,
        "stop_reason": result.stop_reason,
        "resumed_from_step": result.resumed_from_step,
        "train_seconds": round(result.elapsed_s, 1),
        "phase_seconds": phases.done(),
        "attempts": job.attempts,
    }
    with transaction.atomic():
        version = AdapterVersion.objects.create(
            owner=job.owner,
            adapter=job.adapter,
            version=number,
            parent=parent,
            fs_dir=str(out_dir),
            checksum=checksum,
            dataset_hash=digest,
            evaluation=evaluation,
            loss_curve=result.loss_curve,
            status=AdapterVersion.Status.REJECTED if not report.passed else AdapterVersion.Status.CANDIDATE,
        )
        version.trained_on.set([e["event_id"] for e in train_set])
        (out_dir / "manifest.json").write_text(
            json.dumps(
                {
                    "adapter_id": str(job.adapter_id),
                    "version": number,
                    "parent_version": parent.version if parent else None,
                    "base_model": settings.SERVED_MODEL_ID,
                    "dataset_hash": digest,
                    "checksum": checksum,
                    "policy": training_policy.to_dict(),
                    "created_at": version.created_at.isoformat(),
                },
                indent=2,
            )
        )
        if report.passed:
            adapters.version_promote(version=version, note=report.summary())
    shutil.rmtree(checkpoints, ignore_errors=True)
    return _finish(job, _job_status(version), version=version, report=evaluation, loss_curve=result.loss_curve)


def _job_status(version: AdapterVersion) -> str:
    return (
        TrainingJob.Status.PROMOTED if version.status == AdapterVersion.Status.PROMOTED else TrainingJob.Status.REJECTED
    )
