"""Seeds the global chat tools and the default chat workflow that every chat runs."""

from django.db import migrations

from apps.artifacts.seeds import seed_missing, seeded_names


def seed(apps, schema_editor):
    seed_missing(apps.get_model("artifacts", "Artifact"), apps.get_model("artifacts", "ArtifactVersion"))


def unseed(apps, schema_editor):
    Artifact = apps.get_model("artifacts", "Artifact")
    Artifact.objects.filter(owner__isnull=True, name__in=seeded_names()).delete()


class Migration(migrations.Migration):
    dependencies = [("artifacts", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
