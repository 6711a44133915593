"""The OpenAPI document the real app serves: typed success bodies, declared media types,
documented errors. Each test lists every offending operation at once."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import app

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def spec() -> dict:
    with TestClient(app) as client:  # runs the lifespan: migrates the test database
        response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [(path, method, op) for path, item in spec["paths"].items()
            for method, op in item.items() if method in HTTP_METHODS]


def resolve_ref(spec: dict, ref: str) -> dict:
    prefix = "#/components/schemas/"
    assert ref.startswith(prefix), f"$ref {ref} does not point into components/schemas"
    name = ref[len(prefix):]
    assert name in spec["components"]["schemas"], f"$ref {ref} names no schema"
    return spec["components"]["schemas"][name]


def object_properties(spec: dict, schema: dict, seen: frozenset[str] = frozenset()) -> dict:
    """The named properties schema stands for, following $ref, allOf (merged) and
    anyOf/oneOf (every branch but null must be an object with properties); {} when it is
    not such an object (a bare {}, a dict of additionalProperties, a list, a scalar)."""
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref in seen:
            return {}
        return object_properties(spec, resolve_ref(spec, ref), seen | {ref})
    if "allOf" in schema:
        merged: dict = {}
        for part in schema["allOf"]:
            merged.update(object_properties(spec, part, seen))
        return merged
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [b for b in schema[key] if b.get("type") != "null"]
            found = [object_properties(spec, b, seen) for b in branches]
            if not branches or not all(found):
                return {}
            return {name: prop for props in found for name, prop in props.items()}
    if schema.get("type", "object") != "object":
        return {}
    return dict(schema.get("properties") or {})


def success_problems(spec: dict, path: str, method: str, op: dict) -> list[str]:
    problems = []
    where = f"{method.upper()} {path}"
    successes = {s: r for s, r in op["responses"].items() if s.startswith("2")}
    if not successes:
        problems.append(f"{where}: documents no 2xx response")
    for status, response in successes.items():
        content = response.get("content") or {}
        if status == "204":
            if content:
                problems.append(f"{where} 204: declares a body {sorted(content)}")
            continue
        if not content:
            problems.append(f"{where} {status}: declares no media type in content")
            continue
        for media_type, body in content.items():
            if "*" in media_type:
                problems.append(f"{where} {status}: wildcard media type {media_type}")
            if media_type == "application/json" and not object_properties(
                    spec, body.get("schema") or {}):
                problems.append(f"{where} {status}: application/json schema "
                                f"{body.get('schema')} is not an object with named properties")
    return problems


def error_problems(spec: dict, path: str, method: str, op: dict) -> list[str]:
    problems = []
    where = f"{method.upper()} {path}"
    errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
    if "{" in path and "404" not in errors:
        problems.append(f"{where}: has a path id but documents no 404 "
                        f"(errors documented: {sorted(errors) or 'none'})")
    for status, response in errors.items():
        content = response.get("content") or {}
        schema = (content.get("application/json") or {}).get("schema")
        if schema is None:
            problems.append(f"{where} {status}: no application/json error body declared "
                            f"(content: {sorted(content)})")
        elif "detail" not in object_properties(spec, schema):
            problems.append(f"{where} {status}: error schema {schema} has no `detail` property")
    return problems


def test_the_spec_covers_every_route(spec):
    ops = {(method, path) for path, method, _ in operations(spec)}
    for expected in [("post", "/jobs"), ("get", "/jobs"), ("get", "/jobs/{job_id}"),
                     ("post", "/jobs/{job_id}/cancel"), ("delete", "/jobs/{job_id}"),
                     ("get", "/jobs/{job_id}/metrics"), ("get", "/jobs/{job_id}/checkpoints"),
                     ("get", "/jobs/{job_id}/checkpoints/{ref}"), ("post", "/predict"),
                     ("get", "/datasets"), ("post", "/datasets"),
                     ("get", "/datasets/{dataset_id}"), ("delete", "/datasets/{dataset_id}"),
                     ("get", "/models"), ("get", "/health")]:
        assert expected in ops, f"{expected} missing from the OpenAPI document"


def test_every_success_response_is_typed(spec):
    problems = [p for path, method, op in operations(spec)
                for p in success_problems(spec, path, method, op)]
    assert not problems, "success responses:\n" + "\n".join(problems)


def test_the_checkpoint_download_declares_its_binary_media_type(spec):
    content = spec["paths"]["/jobs/{job_id}/checkpoints/{ref}"]["get"]["responses"]["200"][
        "content"]
    assert list(content) == ["application/octet-stream"]


def test_every_error_response_is_documented_with_a_detail(spec):
    problems = [p for path, method, op in operations(spec)
                for p in error_problems(spec, path, method, op)]
    assert not problems, "error responses:\n" + "\n".join(problems)


# ---- the checks themselves ----------------------------------------------------------------

SYNTHETIC = {"components": {"schemas": {
    "Thing": {"type": "object", "properties": {"id": {"type": "string"}}},
    "Error": {"type": "object", "properties": {"detail": {"type": "string"}}},
    "Loose": {"type": "object", "additionalProperties": {"type": "number"}},
}}}


def json_response(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


@pytest.mark.parametrize("schema", [
    {"$ref": "#/components/schemas/Thing"},
    {"anyOf": [{"$ref": "#/components/schemas/Thing"}, {"type": "null"}]},
    {"allOf": [{"$ref": "#/components/schemas/Thing"}]},
])
def test_a_named_object_passes(schema):
    op = {"responses": {"200": json_response(schema)}}
    assert success_problems(SYNTHETIC, "/things", "get", op) == []


@pytest.mark.parametrize("schema", [
    {},
    {"type": "object", "additionalProperties": True},
    {"$ref": "#/components/schemas/Loose"},
    {"type": "array", "items": {"$ref": "#/components/schemas/Thing"}},
    {"anyOf": [{"$ref": "#/components/schemas/Thing"}, {"type": "string"}]},
])
def test_an_untyped_success_body_fails(schema):
    op = {"responses": {"200": json_response(schema)}}
    assert len(success_problems(SYNTHETIC, "/things", "get", op)) == 1


def test_a_success_without_media_type_and_a_204_with_a_body_fail():
    op = {"responses": {"200": {"description": "bytes"},
                        "204": json_response({"$ref": "#/components/schemas/Thing"})}}
    assert len(success_problems(SYNTHETIC, "/things", "get", op)) == 2


def test_a_path_id_without_404_and_an_error_without_detail_fail():
    op = {"responses": {"200": json_response({"$ref": "#/components/schemas/Thing"}),
                        "409": json_response({"$ref": "#/components/schemas/Thing"}),
                        "422": json_response({"$ref": "#/components/schemas/Error"})}}
    problems = error_problems(SYNTHETIC, "/things/{thing_id}", "get", op)
    assert len(problems) == 2
    assert "no 404" in problems[0] and "409" in problems[1] and "`detail`" in problems[1]
