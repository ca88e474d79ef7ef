"""The official swagger spec as a router and a request checker.

Every ``/api/v1`` request is matched against the spec's path templates (so a typo in the bot's client
shows up as "not in the spec" rather than a silent 404) and its JSON body is checked against the body
parameter's schema. A spec violation is always *recorded*; whether it also fails the request follows
what Gitea's Go binding really does: a wrong JSON type, bad JSON, a bad ``date-time`` or a missing/zero
``Required`` field is a 422, while unknown fields, ``null`` values and out-of-enum strings are silently
accepted by Go and so only recorded.

The spec is large (800 kB); it is parsed and indexed once per process and flavour.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonschema

DATA_DIR = Path(__file__).parent / "data"  # vendored copies, see data/README.md
SPEC_FILES = {False: "gitea-swagger.v1.json.gz", True: "forgejo-swagger.v1.json.gz"}

# Query parameters every route accepts (authentication and sudo), besides those the route declares.
GLOBAL_QUERY = frozenset({"token", "access_token", "sudo"})
# Path parameters that Gitea routes with ``*`` and so may contain slashes when last in the template.
GREEDY_PARAMS = frozenset({"branch", "filepath", "path"})


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    regex: re.Pattern[str]
    query: dict[str, dict[str, Any]]  # name -> the swagger parameter object
    body_def: str | None  # name of the body's definition, e.g. "CreateIssueCommentOption"
    body_schema: dict[str, Any] | None
    rank: tuple[int, ...]  # literal segments before parameters: the most specific template wins


@dataclass
class BodyCheck:
    """Outcome of checking a request body: the decoded value, what is wrong, and Gitea's 422 if any."""

    value: Any = None
    problems: list[str] = field(default_factory=list)
    binding_error: str | None = None  # the 422 message, "[Body]: Required" style


def _segment_regex(segment: str, last: bool) -> str:
    out = []
    for part in re.split(r"(\{[^}]+\})", segment):
        if part.startswith("{"):
            name = part[1:-1]
            pattern = ".+" if last and name in GREEDY_PARAMS and part == segment else "[^/]+?"
            group = re.sub(r"\W", "_", name)
            out.append(f"(?P<{group}>{pattern})")
        elif part:
            out.append(re.escape(part))
    return "".join(out)


class Spec:
    """An indexed swagger 2.0 document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.definitions: dict[str, Any] = document["definitions"]
        self.operations: list[Operation] = []
        self._validators: dict[str, jsonschema.Draft4Validator] = {}
        for template, ops in document["paths"].items():
            segments = template.strip("/").split("/")
            regex = re.compile(
                "^/" + "/".join(_segment_regex(s, i == len(segments) - 1) for i, s in enumerate(segments)) + "$"
            )
            rank = tuple(1 if "{" in s else 0 for s in segments)
            for method, op in ops.items():
                if method == "parameters":
                    continue
                params = op.get("parameters", [])
                body = next((p for p in params if p["in"] == "body"), None)
                schema = body.get("schema") if body else None
                body_def = schema["$ref"].rsplit("/", 1)[-1] if schema and "$ref" in schema else None
                self.operations.append(Operation(
                    method=method.upper(),
                    template=template,
                    regex=regex,
                    query={p["name"]: p for p in params if p["in"] == "query"},
                    body_def=body_def,
                    body_schema=schema,
                    rank=rank,
                ))
        self.operations.sort(key=lambda op: op.rank)

    def has(self, method: str, template: str) -> bool:
        return any(op.method == method and op.template == template for op in self.operations)

    def match(self, method: str, raw_path: str) -> tuple[Operation | None, dict[str, str], bool]:
        """(operation, decoded path params, path_exists) for a still percent-encoded path, so that an
        encoded ``/`` stays inside its parameter. ``path_exists`` tells a 405 from a 404."""
        path_exists = False
        for op in self.operations:
            m = op.regex.match(raw_path)
            if not m:
                continue
            path_exists = True
            if op.method == method:
                return op, {name: unquote(value) for name, value in m.groupdict().items()}, True
        return None, {}, path_exists

    def check_query(self, op: Operation, query: dict[str, list[str]]) -> list[str]:
        """Unknown names, non-integers where the spec says integer, values outside an enum. Gitea
        ignores all of these, so they are only ever recorded."""
        problems = []
        for name, values in query.items():
            param = op.query.get(name)
            if param is None:
                if name not in GLOBAL_QUERY:
                    problems.append(f"unknown query parameter {name!r}")
                continue
            for value in values:
                if param.get("type") == "integer" and not re.fullmatch(r"-?\d+", value):
                    problems.append(f"query parameter {name}={value!r} is not an integer")
                if "enum" in param and value not in param["enum"]:
                    problems.append(f"query parameter {name}={value!r} is not one of {param['enum']}")
        return problems

    def _validator(self, op: Operation) -> jsonschema.Draft4Validator:
        key = op.body_def or f"{op.method} {op.template}"
        if key not in self._validators:
            schema = dict(op.body_schema or {})
            schema["definitions"] = self.definitions
            self._validators[key] = jsonschema.Draft4Validator(schema)
        return self._validators[key]

    def check_body(self, op: Operation, method: str, content_type: str, raw: bytes) -> BodyCheck:
        """Decode and check a body the way Gitea's ``bind()`` middleware would."""
        check = BodyCheck()
        if "json" not in content_type:
            return self._check_non_json(op, method, content_type, raw, check)
        if raw.strip():
            try:
                check.value = json.loads(raw)
            except ValueError as exc:
                check.problems.append(f"body is not JSON: {exc}")
                check.binding_error = f"[]: invalid character in JSON body ({exc})"
                return check
        else:
            check.value = {}  # Go's decoder tolerates io.EOF: an empty body binds as a zero struct
        schema = self._resolve(op.body_schema or {})
        for error in sorted(self._validator(op).iter_errors(check.value), key=lambda e: list(e.absolute_path)):
            self._classify(op, schema, error, check)
        self._check_unknown(schema, check.value, "", check)
        self._check_required_zero(op, schema, check.value, check)
        self._check_datetimes(schema, check.value, "", check)
        return check

    # --- Go binding semantics ---------------------------------------------------------------------

    def _check_non_json(self, op: Operation, method: str, content_type: str, raw: bytes,
                        check: BodyCheck) -> BodyCheck:
        """binding.Bind without a JSON content type: POST and PUT (or any request naming another type)
        fail outright; PATCH and DELETE fall back to form binding, which never reads a JSON body."""
        if method in ("POST", "PUT") or content_type:
            reason = "Unsupported Content-Type" if content_type else "Empty Content-Type"
            check.problems.append(f"Content-Type {content_type!r}: a JSON body needs application/json")
            check.binding_error = f"[]: {reason}"
            return check
        if raw.strip():
            check.problems.append("body sent without Content-Type: Gitea form-binds and ignores it")
        check.value = {}
        self._check_required_zero(op, self._resolve(op.body_schema or {}), check.value, check)
        return check

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.definitions[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def _classify(self, op: Operation, schema: dict[str, Any], error: jsonschema.ValidationError,
                  check: BodyCheck) -> None:
        where = "/".join(str(p) for p in error.absolute_path) or "(body)"
        if error.validator == "required":
            return  # reported with Go's zero-value rule by _check_required_zero
        if error.validator == "type" and error.instance is None:
            check.problems.append(f"{where}: null where the spec says {error.validator_value} (Go ignores it)")
            return
        if error.validator == "enum":
            check.problems.append(f"{where}: {error.instance!r} is not one of {error.validator_value}"
                                  " (Gitea does not check it)")
            return
        check.problems.append(f"{where}: {error.message}")
        if error.validator == "type" and check.binding_error is None:
            field_name = ".".join(str(p) for p in error.absolute_path)
            target = (f"Go struct field {op.body_def}.{field_name}" if field_name
                      else f"Go value of type structs.{op.body_def}")
            check.binding_error = (f"[]: json: cannot unmarshal {_json_kind(error.instance)} into {target}"
                                   f" of type {_go_type(error.schema)}")

    def _check_unknown(self, schema: dict[str, Any], value: Any, where: str, check: BodyCheck) -> None:
        """Unknown fields: Go drops them silently, which hides client bugs, so record them."""
        schema = self._resolve(schema)
        if isinstance(value, dict) and "properties" in schema:
            for key, item in value.items():
                if key not in schema["properties"]:
                    check.problems.append(f"{where}{key}: unknown field (Gitea ignores it)")
                else:
                    self._check_unknown(schema["properties"][key], item, f"{where}{key}.", check)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                self._check_unknown(schema["items"], item, f"{where}{i}.", check)

    def _check_required_zero(self, op: Operation, schema: dict[str, Any], value: Any, check: BodyCheck) -> None:
        """binding:"Required" fails on a missing *or zero* value ("", 0, false, [])."""
        if not isinstance(value, dict):
            return
        for name in schema.get("required", []):
            if value.get(name) in (None, "", 0, False, [], {}):
                go_name = schema["properties"].get(name, {}).get("x-go-name", name)
                check.problems.append(f"{name}: required")
                if check.binding_error is None:
                    check.binding_error = f"[{go_name}]: Required"

    def _check_datetimes(self, schema: dict[str, Any], value: Any, where: str, check: BodyCheck) -> None:
        """time.Time only unmarshals RFC 3339; anything else is a decode error (422)."""
        schema = self._resolve(schema)
        if isinstance(value, dict):
            for key, item in value.items():
                sub = schema.get("properties", {}).get(key)
                if sub is None:
                    continue
                sub = self._resolve(sub)
                if sub.get("format") == "date-time" and isinstance(item, str) and not _is_rfc3339(item):
                    check.problems.append(f"{where}{key}: {item!r} is not RFC 3339")
                    if check.binding_error is None:
                        check.binding_error = f'[]: parsing time "\\"{item}\\"" as RFC 3339 failed'
                else:
                    self._check_datetimes(sub, item, f"{where}{key}.", check)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                self._check_datetimes(schema["items"], item, f"{where}{i}.", check)


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _is_rfc3339(text: str) -> bool:
    if not _RFC3339.match(text):
        return False
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")


def _go_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if kind == "integer":
        return schema.get("format", "int")
    if kind == "array":
        return "[]" + _go_type(schema.get("items") or {})
    return {"string": "string", "boolean": "bool", "number": "float64", "object": "struct"}.get(kind, "interface {}")


@lru_cache(maxsize=None)
def load(forgejo: bool = False) -> Spec:
    """The indexed spec of a flavour, parsed once per process."""
    with gzip.open(DATA_DIR / SPEC_FILES[forgejo]) as stream:
        return Spec(json.load(stream))
