from celery import shared_task

from apps.training import jobs, triggers


# Late acks (the queue's default): a worker that dies mid-job leaves it queued for another, which
# resumes from the job's checkpoint; the job row's heartbeat tells a live run from a dead one.
@shared_task
def train_adapter(job_id: str) -> str:
    return jobs.run_training_job(job_id)


@shared_task
def check_training_triggers() -> int:
    """Beat: start the jobs the training policy's triggers call for."""
    return len(triggers.check_all())


@shared_task
def reap_stalled_training_jobs() -> int:
    """Beat: send again the jobs whose worker died, to resume from their checkpoints."""
    return len(jobs.reap_stalled_jobs())
