"""RFC 6902 patches as ConfigOps accepts them: their JSON Schema (the API's input and the
architect's output are both checked against it), the accepted shapes, and applying on a copy."""

import copy

import jsonpatch
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from liminal.errors import Conflict, Invalid

MAX_OPS = 100
JUSTIFICATION_MAX = 2000

_POINTER = {"type": "string", "pattern": "^(/.*)?$", "maxLength": 1000}

OP_SCHEMA = {
    "type": "object",
    "properties": {
        "op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
        "path": _POINTER,
        "from": _POINTER,
        "value": {},
    },
    "required": ["op", "path"],
    "allOf": [
        {"if": {"properties": {"op": {"enum": ["add", "replace", "test"]}}}, "then": {"required": ["value"]}},
        {"if": {"properties": {"op": {"enum": ["move", "copy"]}}}, "then": {"required": ["from"]}},
    ],
}

PATCH_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "RFC 6902 JSON Patch",
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_OPS,
    "items": OP_SCHEMA,
}

# What the architect must write: the operations and why.
PROPOSAL_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "ops": PATCH_SCHEMA,
        "justification": {"type": "string", "minLength": 1, "maxLength": JUSTIFICATION_MAX},
    },
    "required": ["ops", "justification"],
}

_patch_validator = Draft202012Validator(PATCH_SCHEMA)
proposal_validator = Draft202012Validator(PROPOSAL_SCHEMA)


def pointer_of(path) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def normalise_ops(raw) -> list[dict]:
    """The operations of a patch sent as a list, as {"ops": [...]}, or as one operation object.
    Raises Invalid naming the field `patch` and, by JSON pointer, the operation at fault."""
    if isinstance(raw, dict) and "ops" in raw and "op" not in raw:
        raw = raw["ops"]
    elif isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise Invalid('Must be a list of RFC 6902 operations, {"ops": [...]}, or one operation.', field="patch")
    error = best_match(_patch_validator.iter_errors(raw))
    if error is not None:
        raise Invalid(error.message, field="patch", pointer=f"/patch{pointer_of(error.absolute_path)}")
    return [{key: op[key] for key in ("op", "path", "from", "value") if key in op} for op in raw]


class PatchDoesNotApply(Exception):
    """The operations cannot be applied to the body; `error` is the domain error to report."""

    def __init__(self, error):
        super().__init__(error.message)
        self.error = error


def apply_ops(body: dict, ops: list[dict]) -> dict:
    """The body with the operations applied, all or nothing, on a deep copy (the body is untouched).
    A failing `test` is a Conflict; an operation whose path is missing is Invalid."""
    for index in range(len(ops)):
        try:
            jsonpatch.JsonPatch(ops[index : index + 1])
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
            raise PatchDoesNotApply(Invalid(str(exc), field="patch", pointer=f"/patch/{index}")) from exc
    document = copy.deepcopy(body)
    # One operation at a time, so the error names the one that did not apply.
    for index, op in enumerate(ops):
        try:
            document = jsonpatch.JsonPatch([op]).apply(document, in_place=True)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise PatchDoesNotApply(
                Conflict(
                    f"The test operation at /patch/{index} failed, so nothing was changed: {exc}",
                    details={"pointer": f"/patch/{index}", "body_pointer": op["path"] or "/"},
                )
            ) from exc
        except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPointerException, jsonpatch.JsonPatchException) as exc:
            raise PatchDoesNotApply(
                Invalid(f"The operation does not apply: {exc}", field="patch", pointer=f"/patch/{index}")
            ) from exc
    return document
