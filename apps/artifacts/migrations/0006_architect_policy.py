"""The architect's prompt, targets, metrics window and answer length become the global
`architect.default` policy.architect artifact (they were settings constants), so an admin edits
them like any other behaviour, with versions and rollback."""

from django.db import migrations, models

from apps.artifacts.seeds import seed_missing


def seed(apps, schema_editor):
    seed_missing(apps.get_model("artifacts", "Artifact"), apps.get_model("artifacts", "ArtifactVersion"))


class Migration(migrations.Migration):
    dependencies = [("artifacts", "0005_workflow_title_prompt")]

    operations = [
        migrations.AlterField(
            model_name="artifact",
            name="kind",
            field=models.CharField(
                choices=[
                    ("workflow.chat", "Chat workflow"),
                    ("policy.routing", "Routing policy"),
                    ("tool.spec", "Tool"),
                    ("adapter.lora", "LoRA adapter"),
                    ("policy.training", "Training policy"),
                    ("policy.architect", "Architect policy"),
                ],
                max_length=32,
            ),
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
