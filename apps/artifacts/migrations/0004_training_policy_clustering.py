"""Installs still on the seeded training policy gain its `clustering` section (topics and skill
proposals); an edited policy is left as it is and clusters with the built-in defaults."""

from django.db import migrations

from apps.artifacts.seeds import upgrade_seeded


def upgrade(apps, schema_editor):
    upgrade_seeded(apps.get_model("artifacts", "Artifact"), apps.get_model("artifacts", "ArtifactVersion"))


class Migration(migrations.Migration):
    dependencies = [("artifacts", "0003_upgrade_seeded")]

    operations = [migrations.RunPython(upgrade, migrations.RunPython.noop)]
