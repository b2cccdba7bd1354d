from celery import shared_task

from apps.training import jobs


# Late acks (the queue's default): a worker that dies mid-job leaves it queued for another, which
# resumes from the job's checkpoint; the job row's heartbeat tells a live run from a dead one.
@shared_task
def train_adapter(job_id: str) -> str:
    return jobs.run_training_job(job_id)
