from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ArtifactsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "apps.artifacts"

    def ready(self):
        post_migrate.connect(_seed_missing, sender=self, weak=False)


def _seed_missing(sender, **kwargs):
    """Re-create seeded behaviour that is missing (a flushed database keeps no rows)."""
    from apps.artifacts.models import Artifact, ArtifactVersion
    from apps.artifacts.seeds import seed_missing

    seed_missing(Artifact, ArtifactVersion)
