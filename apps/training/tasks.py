from celery import shared_task

from apps.training import jobs, skills, triggers
from apps.training.models import PreferenceEvent, SemanticCluster


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


@shared_task
def cluster_event(event_id: str) -> int:
    """Place a new signal in its owner's clusters and the global ones."""
    event = PreferenceEvent.objects.filter(pk=event_id).first()
    return len(skills.cluster_event_add(event=event)) if event is not None else 0


@shared_task
def cluster_maintain() -> dict:
    """Beat: merge close clusters, split loose ones, retire empty ones (ids stay stable)."""
    return skills.clusters_maintain()


@shared_task
def cluster_label(cluster_id: str) -> str:
    """The model names an active cluster from its samples (again once its size has doubled)."""
    from workers.cluster.labels import label_cluster

    cluster = SemanticCluster.objects.filter(pk=cluster_id).first()
    if cluster is None or not skills.needs_label(cluster):
        return "skipped"
    samples = skills.label_samples(cluster)
    if not samples:
        return "skipped"
    policy = skills.clustering_policy()
    labelled = label_cluster(jobs.generation_engine(), samples, prompt=policy["label_prompt"])
    skills.cluster_label_set(cluster=cluster, labelled=labelled)
    return labelled["label"]
