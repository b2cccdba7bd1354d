from django.apps import AppConfig


class ConfigopsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "apps.configops"
