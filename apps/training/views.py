"""The Skills page: your topics (clusters of your signals) on a map, their labels, samples and
skill proposals; admins also see everyone's topics and decide proposals."""

import math

import numpy as np
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps.training import selectors, skills
from apps.training.models import SemanticCluster
from liminal.pages import attempt
from workers.cluster import project_2d

MAP_WIDTH, MAP_HEIGHT, MAP_MARGIN = 560, 320, 40
STATUS_CLASS = {"active": "map-active", "forming": "map-forming"}


def cluster_map(clusters: list[SemanticCluster]) -> dict | None:
    """Each cluster as a circle on a 2-D projection of the centroids (principal components):
    near circles are near topics; the area grows with the number of signals."""
    if not clusters:
        return None
    points = project_2d(np.asarray([c.centroid for c in clusters], dtype=np.float64))
    spans = [(points[:, axis].min(), points[:, axis].max()) for axis in range(2)]
    biggest = max(c.size for c in clusters) or 1

    def scale(value, axis, length):
        low, high = spans[axis]
        if high - low < 1e-9:
            return MAP_MARGIN + (length - 2 * MAP_MARGIN) / 2
        return MAP_MARGIN + (length - 2 * MAP_MARGIN) * (value - low) / (high - low)

    circles = []
    for cluster, (x, y) in zip(clusters, points, strict=True):
        circles.append(
            {
                "cluster": cluster,
                "x": round(scale(x, 0, MAP_WIDTH), 1),
                "y": round(MAP_HEIGHT - scale(y, 1, MAP_HEIGHT), 1),
                "r": round(6 + 22 * math.sqrt(cluster.size / biggest), 1),
                "css": STATUS_CLASS.get(cluster.status, "map-forming"),
                "name": cluster.label or f"{cluster.size} signal{'s' if cluster.size != 1 else ''}",
            }
        )
    return {"width": MAP_WIDTH, "height": MAP_HEIGHT, "circles": circles}


@login_required
def skills_page(request):
    scope = request.GET.get("scope", "mine")
    if scope not in ("mine", "global", "all") or (scope == "all" and not request.user.is_staff):
        scope = "mine"
    clusters = list(selectors.clusters_list(actor=request.user, scope=scope).select_related("proposal"))
    adapters = selectors.skill_adapters_by_cluster(actor=request.user)
    rows = [
        {
            "cluster": c,
            "samples": selectors.cluster_samples(actor=request.user, cluster=c)[:4],
            "adapter": adapters.get(str(c.pk)),
            "proposal": getattr(c, "proposal", None) if not c.is_global else None,
        }
        for c in clusters
    ]
    everyone = request.user.is_staff
    proposals = selectors.skill_proposals(actor=request.user, everyone=everyone).filter(status="pending")
    context = {
        "scope": scope,
        "rows": [r for r in rows if r["cluster"].status == SemanticCluster.Status.ACTIVE],
        "forming": [r for r in rows if r["cluster"].status != SemanticCluster.Status.ACTIVE],
        "map": cluster_map(clusters),
        "pending": list(proposals),
        "skills": list(selectors.skill_adapters(actor=request.user)),
        "policy": skills.clustering_policy(),
    }
    return render(request, "skills/index.html", context)


def _decide(request, proposal_id, action, done_message):
    proposal = selectors.skill_proposal_get(actor=request.user, proposal_id=proposal_id)
    attempt(request, lambda: action(proposal), success=done_message)
    return redirect("skills")


@login_required
@require_POST
def proposal_approve(request, proposal_id):
    return _decide(
        request,
        proposal_id,
        lambda p: skills.skill_proposal_approve(actor=request.user, proposal=p),
        "Approved: the skill adapter is training on its topic's signals; it is used once it passes the gate.",
    )


@login_required
@require_POST
def proposal_dismiss(request, proposal_id):
    return _decide(
        request,
        proposal_id,
        lambda p: skills.skill_proposal_dismiss(actor=request.user, proposal=p),
        "Dismissed: this topic will not be proposed again.",
    )
