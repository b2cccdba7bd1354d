from django.db import migrations


def seed(apps, schema_editor):
    RetrievalConfig = apps.get_model("knowledge", "RetrievalConfig")
    RetrievalConfig.objects.get_or_create(
        pk=1,
        defaults={
            "rrf_k": 60,
            "candidates": 40,
            "ef_search": 100,
            "min_similarity": 0.3,
            "default_k": 5,
        },
    )


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
