"""Brings installs still on the seeded bodies up to date: the chat workflow asks the intent
classifier only when documents are bound, and the training policy gains checkpoints and triggers."""

from django.db import migrations

from apps.artifacts.seeds import upgrade_seeded


def upgrade(apps, schema_editor):
    upgrade_seeded(apps.get_model("artifacts", "Artifact"), apps.get_model("artifacts", "ArtifactVersion"))


class Migration(migrations.Migration):
    dependencies = [("artifacts", "0002_seed_chat_workflow")]

    operations = [migrations.RunPython(upgrade, migrations.RunPython.noop)]
