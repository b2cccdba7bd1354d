from django.urls import path

from apps.training import views

urlpatterns = [
    path("skills/", views.skills_page, name="skills"),
    path("skills/proposals/<uuid:proposal_id>/approve/", views.proposal_approve, name="skill-proposal-approve"),
    path("skills/proposals/<uuid:proposal_id>/dismiss/", views.proposal_dismiss, name="skill-proposal-dismiss"),
]
