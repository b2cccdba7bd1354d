"""Validation of artifact bodies: the kind's JSON Schema, then references to other artifacts.

Every fault is reported with a JSON pointer into the body, so an editor can point at it.
"""

import json
from functools import cache
from pathlib import Path

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from apps.artifacts import registry
from apps.artifacts.models import Artifact
from liminal.errors import Invalid
from workers.policy import ConditionError, parse_condition
from workers.policy.expressions import ExpressionError, compile_expression

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
KIND_FAMILY = {kind: kind.split(".")[0] for kind in Artifact.Kind.values}
MAX_BODY_DEPTH = 64


@cache
def kind_schema(kind: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{kind}.json").read_text())


@cache
def _validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(kind_schema(kind), format_checker=Draft202012Validator.FORMAT_CHECKER)


def _pointer(path) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _fault(message: str, pointer: str, field: str = "schema"):
    return Invalid(message, field=field, details={"pointer": f"/{field}{pointer}", "body_pointer": pointer or "/"})


def check_storable(value, *, field: str = "schema") -> None:
    """Refuse what PostgreSQL's jsonb cannot hold (NUL characters) and absurd nesting, naming the
    place by JSON pointer as the body validator does, so the caller gets a 400 instead of a 500."""
    stack = [(value, "", 0)]
    while stack:
        item, pointer, depth = stack.pop()
        if depth > MAX_BODY_DEPTH:
            raise _unstorable(f"is nested more than {MAX_BODY_DEPTH} levels deep.", field, pointer)
        if isinstance(item, str) and "\x00" in item:
            raise _unstorable("must not contain NUL characters.", field, pointer)
        if isinstance(item, dict):
            for key, child in item.items():
                child_pointer = f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}"
                if "\x00" in key:
                    raise _unstorable("keys must not contain NUL characters.", field, child_pointer)
                stack.append((child, child_pointer, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{pointer}/{index}", depth + 1) for index, child in enumerate(item))


def _unstorable(message: str, field: str, pointer: str) -> Invalid:
    return Invalid(message, field=field, details={"pointer": f"/{field}{pointer}", "body_pointer": pointer or "/"})


def body_kind(body) -> str:
    if not isinstance(body, dict):
        raise _fault("must be a JSON object.", "")
    kind = body.get("kind")
    if kind not in KIND_FAMILY:
        raise _fault(f"kind must be one of {', '.join(sorted(KIND_FAMILY))}.", "/kind")
    return kind


def validate_body(body, *, owner, kind: str | None = None) -> str:
    """Check a body for an artifact owned by `owner` (None: global); return its kind.
    Raises Invalid (400 validation_error) naming the first fault by JSON pointer."""
    check_storable(body)
    found_kind = body_kind(body)
    if kind is not None and found_kind != kind:
        raise _fault(f"kind cannot change from {kind} to {found_kind}.", "/kind")
    error = best_match(_validator(found_kind).iter_errors(body))
    if error is not None:
        raise _fault(error.message, _pointer(error.absolute_path))
    checks = {
        "workflow.chat": _check_workflow,
        "tool.spec": _check_tool,
        "policy.routing": _check_routing,
        "adapter.lora": _check_adapter,
        "policy.architect": _check_architect,
    }
    if found_kind in checks:
        checks[found_kind](body, owner)
    return found_kind


def _visible_to(owner):
    """Artifacts an artifact owned by `owner` may name: a global one may name only global ones."""
    from apps.artifacts.selectors import visible_q

    if owner is None:
        return Artifact.objects.filter(owner__isnull=True)
    return Artifact.objects.filter(visible_q(owner))


def _check_workflow(body: dict, owner) -> None:
    nodes = body["nodes"]
    ids: dict[str, int] = {}
    for index, node in enumerate(nodes):
        if node["id"] in ids:
            raise _fault(f"node id {node['id']!r} is used twice.", f"/nodes/{index}/id")
        ids[node["id"]] = index
    if "entrypoint" in body and body["entrypoint"] not in ids:
        raise _fault(f"entrypoint {body['entrypoint']!r} is not a node id.", "/entrypoint")
    visible = _visible_to(owner)
    for index, node in enumerate(nodes):
        targets = [("next", node.get("next")), ("on_error", node.get("on_error"))]
        targets += [(f"branches/{b}/next", branch["next"]) for b, branch in enumerate(node.get("branches", []))]
        for where, target in targets:
            if target is not None and target not in ids:
                raise _fault(f"{target!r} is not a node id.", f"/nodes/{index}/{where}")
        for b, branch in enumerate(node.get("branches", [])):
            if "when" in branch:
                try:
                    parse_condition(branch["when"])
                except ConditionError as exc:
                    raise _fault(str(exc), f"/nodes/{index}/branches/{b}/when") from exc
        if node["type"] == "tool_call" and not visible.filter(kind="tool.spec", name=node["tool"]).exists():
            raise _fault(f"no tool named {node['tool']!r} is visible here.", f"/nodes/{index}/tool")


def _check_tool(body: dict, owner) -> None:
    if registry.handler_for(body["handler"]) is None:
        known = ", ".join(registry.handler_names()) or "none"
        raise _fault(f"no handler {body['handler']!r} is installed (installed: {known}).", "/handler")
    if "inputs" in body:
        try:
            Draft202012Validator.check_schema(body["inputs"])
        except jsonschema.SchemaError as exc:
            raise _fault(f"inputs is not a valid JSON Schema: {exc.message}", "/inputs") from exc


def _check_routing(body: dict, owner) -> None:
    visible = _visible_to(owner)
    for r, rule in enumerate(body["rules"]):
        try:
            compile_expression(rule["when"])
        except ExpressionError as exc:
            raise _fault(f"rule {rule['id']!r}: {exc}", f"/rules/{r}/when") from exc
        adapter_id = (rule.get("action") or {}).get("adapter_id")
        if adapter_id and not visible.filter(kind="adapter.lora", pk=adapter_id).exists():
            raise _fault("no adapter with this id is visible here.", f"/rules/{r}/action/adapter_id")


def _check_adapter(body: dict, owner) -> None:
    policy_id = body.get("training_policy_id")
    if policy_id and not _visible_to(owner).filter(kind="policy.training", pk=policy_id).exists():
        raise _fault("no training policy with this id is visible here.", "/training_policy_id")


def _check_architect(body: dict, owner) -> None:
    if owner is not None:
        raise _fault("the architect's policy is global: only an admin's global artifact is read.", "/kind")
    global_artifacts = _visible_to(None)
    for index, target in enumerate(body["targets"]):
        if not global_artifacts.filter(kind=target["kind"], name=target["name"]).exists():
            raise _fault(f"no global {target['kind']} named {target['name']!r}.", f"/targets/{index}/name")
