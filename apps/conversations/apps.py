from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "apps.conversations"

    def ready(self):
        from celery.signals import worker_ready

        from apps.conversations import tools

        tools.register()

        worker_ready.connect(_warm_engine_on_inference_workers, weak=False)


def _warm_engine_on_inference_workers(sender, **kwargs):
    from apps.conversations.engine_runtime import warm_up_in_background

    warm_up_in_background(sender.app.amqp.queues.consume_from.keys())
