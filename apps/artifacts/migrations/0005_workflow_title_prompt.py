"""Installs still on the seeded chat workflow gain its `title_prompt` (conversation titles were a
settings constant before); an edited workflow is left as it is and titles with the seeded prompt."""

from django.db import migrations

from apps.artifacts.seeds import upgrade_seeded


def upgrade(apps, schema_editor):
    upgrade_seeded(apps.get_model("artifacts", "Artifact"), apps.get_model("artifacts", "ArtifactVersion"))


class Migration(migrations.Migration):
    dependencies = [("artifacts", "0004_training_policy_clustering")]

    operations = [migrations.RunPython(upgrade, migrations.RunPython.noop)]
