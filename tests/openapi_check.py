"""Validate JSON documents against a response schema of the LINSTOR OpenAPI spec (third_party/linstor)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS30Validator

# In the repository (third_party/linstor/README.md: source and licence), so that a clone runs every test.
SPEC_PATH = Path(__file__).resolve().parents[1] / "third_party" / "linstor" / "rest_v1_openapi.yaml"


@functools.lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    return relax_enums(spec)


def relax_enums(spec: dict[str, Any]) -> dict[str, Any]:
    """Two known gaps between the spec and real controllers, and nothing else:

    - enums: controllers answer ``SATELLITE`` where the spec spells ``Satellite`` (third_party/linstor/NOTES.md), so
      every string enum accepts its upper-case spelling too;
    - ``VolumeLayer.data`` is a ``oneOf`` of layer schemas whose properties are all optional and
      that carries no discriminator (the sibling ``type`` says which layer it is): any object
      matches several branches, so no real answer can satisfy ``oneOf``. It is checked as ``anyOf``.
    """
    spec = copy.deepcopy(spec)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            values = node.get("enum")
            if isinstance(values, list) and all(isinstance(v, str) for v in values):
                node["enum"] = sorted({*values, *(v.upper() for v in values)})
            if "oneOf" in node and "discriminator" not in node:
                node["anyOf"] = node.pop("oneOf")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return spec


def response_schema(path: str, method: str = "get", status: str = "200") -> dict[str, Any]:
    spec = load_spec()
    op = spec["paths"][path][method]
    response = op["responses"][status]
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return response["content"]["application/json"]["schema"]


def validate(instance: Any, path: str, method: str = "get", status: str = "200") -> None:
    """Raise jsonschema.ValidationError when ``instance`` does not match the documented response."""
    spec = load_spec()
    schema = {**response_schema(path, method, status), "components": spec["components"]}
    OAS30Validator(schema).validate(instance)


def validate_schema(instance: Any, name: str) -> None:
    """Validate against ``components/schemas/<name>`` (e.g. ApiCallRcList for error bodies)."""
    spec = load_spec()
    OAS30Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]}).validate(instance)
