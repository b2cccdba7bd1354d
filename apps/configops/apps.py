from django.apps import AppConfig


class ConfigopsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "apps.configops"
    verbose_name = "ConfigOps"

    def ready(self):
        _schedule_the_architect()


def _schedule_the_architect():
    """The architect's tasks go to the `inference` queue (its workers hold the engine), and its
    nightly run joins the beat schedule; liminal/celery.py owns both tables. The run's time is
    the setting CONFIGOPS_ARCHITECT_SCHEDULE."""
    from celery.schedules import crontab
    from django.conf import settings

    from liminal.celery import app

    app.conf.task_routes.setdefault("apps.configops.tasks.architect_*", {"queue": "inference"})
    app.conf.beat_schedule.setdefault(
        "configops-architect-nightly",
        {
            "task": "apps.configops.tasks.architect_nightly",
            "schedule": crontab(**settings.CONFIGOPS_ARCHITECT_SCHEDULE),
        },
    )
