from django.apps import AppConfig


class RouterConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "apps.router"

    def ready(self):
        from django.db.models.signals import post_save

        from apps.router.state import on_version_saved
        from apps.training.models import AdapterVersion

        post_save.connect(on_version_saved, sender=AdapterVersion, dispatch_uid="router-skill-centroid")
