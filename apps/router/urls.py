from django.urls import path

from apps.router import views

urlpatterns = [path("routing/", views.policy_editor, name="routing-policy")]
