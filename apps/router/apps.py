from django.apps import AppConfig


class RouterConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "apps.router"

    def ready(self):
        from django.db.models.signals import post_save

        from apps.router.state import on_event_saved, on_version_saved
        from apps.training.models import AdapterVersion, PreferenceEvent

        post_save.connect(on_version_saved, sender=AdapterVersion, dispatch_uid="router-skill-centroid")
        post_save.connect(on_event_saved, sender=PreferenceEvent, dispatch_uid="router-adapter-success")
