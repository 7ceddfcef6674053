"""Kubernetes protobuf bodies (``application/vnd.kubernetes.protobuf``) for built-in types.

Wire format (apimachinery ``runtime/serializer/protobuf``): the 4-byte magic ``k8s\\x00``, then
a ``runtime.Unknown`` message whose ``typeMeta`` holds apiVersion and kind and whose ``raw`` is
the object's own message from the upstream ``generated.proto`` files (vendored under
``data/kubernetes/proto``, parsed by :mod:`cloudctl.emulate.kube_proto`). A small generic proto2
codec converts between that and the JSON object shape the store keeps:

- field names are the JSON names of the upstream OpenAPI definition of the same type (two proto
  names differ only in case: ``uID``/``uid``, ``aPIGroup``/``apiGroup``); a message-typed field
  the definition does not name is an embedded Go struct, inlined in JSON (``volumeSource``,
  ``localObjectReference``, ``handler`` ...);
- the special types: ``Time``/``MicroTime`` (RFC 3339 strings), ``Duration`` (Go duration
  string), ``Quantity`` (string), ``IntOrString``, ``RawExtension`` and ``FieldsV1`` (embedded
  JSON), and the string-list types (``ExtraValue``, ``Verbs``) as JSON arrays;
- decoding keeps what Go's JSON encoding of the decoded object keeps as far as the wire says:
  empty strings and zero times are dropped (gogo writes every non-pointer field), numbers and
  booleans are kept (a pointer field's zero value is meaningful).

The same codec writes ``/openapi/v2`` in the gnostic ``openapi.v2.Document`` encoding that
client-go requests (:func:`openapi_v2_protobuf`; ``OpenAPIv2.proto`` of gnostic-models vendored
beside the Kubernetes files). Everything is loaded on first use and once.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import gzip
import json
import re
import struct
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

from .kube_openapi import manifest, swagger_definitions
from .kube_proto import Field, Message, parse_files

__all__ = [
    "MAGIC",
    "MEDIA_TYPE",
    "OPENAPI_V2_MEDIA_TYPE",
    "ProtobufError",
    "decode",
    "encode",
    "has_type",
    "openapi_v2_protobuf",
    "prefers_protobuf",
]

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
_META = "k8s.io.apimachinery.pkg.apis.meta.v1"
_UNKNOWN = "k8s.io.apimachinery.pkg.runtime.Unknown"
_TIME = {f"{_META}.Time", f"{_META}.MicroTime"}
_QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
_INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_RAW = {"k8s.io.apimachinery.pkg.runtime.RawExtension", f"{_META}.FieldsV1"}
_DURATION = f"{_META}.Duration"


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf message of a known type."""


# --------------------------------------------------------------------------- schema


_ANY = """syntax = "proto3"; package google.protobuf;
message Any { string type_url = 1; bytes value = 2; }"""
"""The protobuf well-known type ``google/protobuf/any.proto`` (the gnostic OpenAPI v2 messages
import it; it ships with protoc, not with the Kubernetes files)."""


@functools.cache
def _messages() -> dict[str, Message]:
    base = resources.files("cloudctl.emulate").joinpath("data/kubernetes")
    texts = [gzip.decompress(base.joinpath(f"{name}.gz").read_bytes()).decode("utf-8")
             for name in manifest() if name.endswith(".proto")]
    return parse_files([*texts, _ANY])


def _definition(full_name: str) -> Mapping[str, Any] | None:
    defs = swagger_definitions()
    found = defs.get("io.k8s." + full_name.removeprefix("k8s.io."))
    return found if isinstance(found, Mapping) else None


@functools.cache
def _json_names(full_name: str) -> dict[int, str | None]:
    """Field number -> JSON name (None: an embedded struct, inlined)."""
    msg = _messages()[full_name]
    definition = _definition(full_name)
    props = set((definition or {}).get("properties") or {})
    lower = {p.lower(): p for p in props}
    out: dict[int, str | None] = {}
    for f in msg.fields:
        if definition is None or f.name in props:
            out[f.number] = f.name
        elif f.name.lower() in lower:
            out[f.number] = lower[f.name.lower()]
        elif f.type in _messages() and not f.repeated:
            out[f.number] = None
        else:
            out[f.number] = f.name
    return out


@functools.cache
def _string_list(full_name: str) -> bool:
    """``type ExtraValue []string``: a one-field message that JSON writes as the list."""
    msg = _messages()[full_name]
    return (_definition(full_name) is None and len(msg.fields) == 1
            and msg.fields[0].name == "items" and msg.fields[0].repeated
            and msg.fields[0].type == "string")


_PACKAGES = {
    "": "k8s.io.api.core", "apps": "k8s.io.api.apps", "batch": "k8s.io.api.batch",
    "policy": "k8s.io.api.policy",
}


@functools.cache
def message_for(api_version: str, kind: str) -> str | None:
    """The full message name of a built-in kind (None: no vendored definition)."""
    group, _, version = api_version.rpartition("/")
    package = _PACKAGES.get(group)
    if package is None and group.endswith(".k8s.io"):
        package = "k8s.io.api." + group.removesuffix(".k8s.io").split(".")[0]
    if package is None:
        return None
    name = f"{package}.{version}.{kind}"
    return name if name in _messages() else None


def has_type(api_version: str, kind: str) -> bool:
    return message_for(api_version, kind) is not None


def prefers_protobuf(accept: str) -> bool:
    """Whether the client's first choice is the Kubernetes protobuf encoding."""
    first = (accept or "").split(",")[0].split(";")[0].strip().lower()
    return first == MEDIA_TYPE


# --------------------------------------------------------------------------- wire level


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ProtobufError("varint too long")


def _put_varint(value: int, out: bytearray) -> None:
    if value < 0:
        value += 1 << 64
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(number, wire type, value) of each field: varint int, fixed bytes, or bytes."""
    out = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ProtobufError("truncated field")
        out.append((number, wire, value))
    return out


def _signed(value: int, bits: int) -> int:
    value &= (1 << 64) - 1
    if bits == 32:
        value &= 0xFFFFFFFF
        return value - (1 << 32) if value & 0x80000000 else value
    return value - (1 << 64) if value & (1 << 63) else value


def _scalar(kind: str, wire: int, value: Any) -> Any:
    if kind == "string":
        return bytes(value).decode("utf-8")
    if kind == "bytes":
        return bytes(value)
    if kind == "bool":
        return bool(value)
    if kind in ("int32", "sint32", "sfixed32"):
        if kind == "sint32":
            return (value >> 1) ^ -(value & 1)
        return _signed(value if wire == 0 else struct.unpack("<I", value)[0], 32)
    if kind in ("int64", "sint64", "sfixed64"):
        if kind == "sint64":
            return (value >> 1) ^ -(value & 1)
        return _signed(value if wire == 0 else struct.unpack("<Q", value)[0], 64)
    if kind in ("uint32", "uint64", "fixed32", "fixed64"):
        return value if wire == 0 else int.from_bytes(value, "little")
    if kind == "double":
        return struct.unpack("<d", value)[0]
    if kind == "float":
        return struct.unpack("<f", value)[0]
    raise ProtobufError(f"unsupported scalar {kind}")


def _packed(kind: str, data: bytes) -> list[Any]:
    if kind == "double":
        return [v[0] for v in struct.iter_unpack("<d", data)]
    if kind == "float":
        return [v[0] for v in struct.iter_unpack("<f", data)]
    out, pos = [], 0
    while pos < len(data):
        value, pos = _varint(data, pos)
        out.append(_scalar(kind, 0, value))
    return out


# --------------------------------------------------------------------------- decoding


def _format_time(seconds: int, nanos: int, micro: bool) -> str:
    when = dt.datetime.fromtimestamp(seconds, dt.UTC)
    if micro:
        return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _format_duration(ns: int) -> str:
    """Go's time.Duration.String()."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                text = f"{ns / size:.9f}".rstrip("0").rstrip(".")
                return f"{sign}{text}{unit}"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = f"{rest / 1e9:.9f}".rstrip("0").rstrip(".")
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return f"{sign}{out}{secs}s"


def _special_from_wire(name: str, data: bytes) -> Any:
    values = {n: v for n, _, v in _fields(data)}
    if name in _TIME:
        seconds = _signed(values.get(1, 0), 64)
        nanos = _signed(values.get(2, 0), 32)
        if seconds == 0 and nanos == 0:
            return None
        return _format_time(seconds, nanos, name.endswith("MicroTime"))
    if name == _QUANTITY:
        return bytes(values.get(1, b"")).decode("utf-8")
    if name == _INT_OR_STRING:
        if values.get(1, 0) == 1:
            return bytes(values.get(3, b"")).decode("utf-8")
        return _signed(values.get(2, 0), 32)
    if name in _RAW:
        raw = bytes(values.get(1, b""))
        return json.loads(raw) if raw.strip() else None
    if name == _DURATION:
        return _format_duration(_signed(values.get(1, 0), 64))
    raise ProtobufError(name)


_SPECIAL = _TIME | _RAW | {_QUANTITY, _INT_OR_STRING, _DURATION}


def _value(f: Field, wire: int, value: Any) -> Any:
    if f.type in _SPECIAL:
        return _special_from_wire(f.type, value)
    if f.type in _messages():
        if _string_list(f.type):
            return [bytes(v).decode("utf-8") for n, _, v in _fields(value) if n == 1]
        return _decode_message(f.type, value)
    out = _scalar(f.type, wire, value)
    return base64.b64encode(out).decode("ascii") if f.type == "bytes" else out


def _decode_message(full_name: str, data: bytes) -> dict[str, Any]:
    msg = _messages()[full_name]
    names = _json_names(full_name)
    out: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        f = msg.by_number.get(number)
        if f is None:
            continue  # unknown fields are skipped, as proto2 decoders do
        name = names[number]
        if f.map_key is not None:
            entry = {n: (w, v) for n, w, v in _fields(value)}
            key_wire, key_raw = entry.get(1, (2, b""))
            key = _scalar(f.map_key, key_wire, key_raw)
            if 2 in entry:
                item = _value(f, *entry[2])
            elif f.type in _messages():
                item = _value(f, 2, b"")
            else:
                item = "" if f.type == "string" else 0
            out.setdefault(name or f.name, {})[key] = item
        elif f.repeated:
            bucket = out.setdefault(name or f.name, [])
            if wire == 2 and f.type not in ("string", "bytes") and f.type not in _messages():
                bucket.extend(_packed(f.type, value))
            else:
                bucket.append(_value(f, wire, value))
        else:
            item = _value(f, wire, value)
            if name is None and isinstance(item, dict):
                out.update(item)
            elif item is None or item == "":
                out.pop(name or f.name, None)
            else:
                out[name or f.name] = item
    return out


def _unknown(data: bytes) -> tuple[str, str, bytes, str, str]:
    if not data.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf body (no k8s\\x00 prefix)")
    api_version = kind = encoding = content_type = ""
    raw = b""
    for number, _, value in _fields(data[len(MAGIC):]):
        if number == 1:
            meta = {n: bytes(v).decode("utf-8") for n, _, v in _fields(value)}
            api_version, kind = meta.get(1, ""), meta.get(2, "")
        elif number == 2:
            raw = bytes(value)
        elif number == 3:
            encoding = bytes(value).decode("utf-8")
        elif number == 4:
            content_type = bytes(value).decode("utf-8")
    return api_version, kind, raw, encoding, content_type


def decode(data: bytes) -> dict[str, Any]:
    """A protobuf request body as the JSON object (apiVersion and kind from ``typeMeta``)."""
    try:
        api_version, kind, raw, encoding, _ = _unknown(data)
        if encoding:
            raise ProtobufError(f"content encoding {encoding!r} is not supported")
        name = message_for(api_version, kind)
        if name is None:
            raise ProtobufError(f"no protobuf definition of {kind} in {api_version or 'v1'}")
        return {"apiVersion": api_version, "kind": kind, **_decode_message(name, raw)}
    except (IndexError, UnicodeDecodeError, ValueError, struct.error) as exc:
        if isinstance(exc, ProtobufError):
            raise
        raise ProtobufError(str(exc)) from exc


# --------------------------------------------------------------------------- encoding


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}


def _key(number: int, wire: int, out: bytearray) -> None:
    _put_varint(number << 3 | wire, out)


def _put_bytes(number: int, data: bytes, out: bytearray) -> None:
    _key(number, 2, out)
    _put_varint(len(data), out)
    out += data


def _special_to_wire(name: str, value: Any) -> bytes:
    out = bytearray()
    if name in _TIME:
        m = _RFC3339.match(str(value))
        if not m:
            raise ProtobufError(f"not an RFC 3339 time: {value!r}")
        when = dt.datetime.fromisoformat(m.group(1) + (
            "+00:00" if m.group(3) == "Z" else m.group(3)))
        _key(1, 0, out)
        _put_varint(int(when.timestamp()), out)
        nanos = int((m.group(2) or "0").ljust(9, "0")[:9])
        if nanos:
            _key(2, 0, out)
            _put_varint(nanos, out)
    elif name == _QUANTITY:
        _put_bytes(1, str(value).encode("utf-8"), out)
    elif name == _INT_OR_STRING:
        if isinstance(value, int) and not isinstance(value, bool):
            _key(1, 0, out)
            _put_varint(0, out)
            _key(2, 0, out)
            _put_varint(value, out)
        else:
            _key(1, 0, out)
            _put_varint(1, out)
            _put_bytes(3, str(value).encode("utf-8"), out)
    elif name in _RAW:
        _put_bytes(1, json.dumps(value, separators=(",", ":")).encode("utf-8"), out)
    elif name == _DURATION:
        text = str(value)
        sign = -1 if text.startswith("-") else 1
        total = sum(float(n) * _UNITS[u] for n, u in _GO_DURATION.findall(text.lstrip("+-")))
        _key(1, 0, out)
        _put_varint(sign * int(total), out)
    return bytes(out)


def _put_scalar(f: Field, number: int, value: Any, out: bytearray) -> None:
    kind = f.type
    if kind == "string":
        _put_bytes(number, str(value).encode("utf-8"), out)
    elif kind == "bytes":
        raw = value if isinstance(value, bytes) else base64.b64decode(str(value))
        _put_bytes(number, raw, out)
    elif kind == "bool":
        _key(number, 0, out)
        _put_varint(1 if value else 0, out)
    elif kind in ("int32", "int64", "uint32", "uint64"):
        _key(number, 0, out)
        _put_varint(int(value), out)
    elif kind == "double":
        _key(number, 1, out)
        out += struct.pack("<d", float(value))
    elif kind == "float":
        _key(number, 5, out)
        out += struct.pack("<f", float(value))
    else:
        raise ProtobufError(f"unsupported scalar {kind}")


def _put_value(f: Field, number: int, value: Any, out: bytearray) -> None:
    if f.type in _SPECIAL:
        _put_bytes(number, _special_to_wire(f.type, value), out)
    elif f.type in _messages():
        if _string_list(f.type):
            inner = bytearray()
            for item in value or []:
                _put_bytes(1, str(item).encode("utf-8"), inner)
            _put_bytes(number, bytes(inner), out)
        else:
            _put_bytes(number, _encode_message(f.type, value if isinstance(value, Mapping)
                                               else {}), out)
    else:
        _put_scalar(f, number, value, out)


def _encode_message(full_name: str, obj: Mapping[str, Any]) -> bytes:
    msg = _messages()[full_name]
    names = _json_names(full_name)
    out = bytearray()
    for f in msg.fields:
        name = names[f.number]
        if name is None:
            _put_bytes(f.number, _encode_message(f.type, obj), out)
            continue
        if name not in obj or obj[name] is None:
            continue
        value = obj[name]
        if f.map_key is not None:
            for key in sorted(value or {}):
                entry = bytearray()
                _put_scalar(Field("key", 1, f.map_key), 1, key, entry)
                _put_value(f, 2, value[key], entry)
                _put_bytes(f.number, bytes(entry), out)
        elif f.repeated:
            for item in value or []:
                _put_value(f, f.number, item, out)
        else:
            _put_value(f, f.number, value, out)
    return bytes(out)


def encode(obj: Mapping[str, Any]) -> bytes:
    """A JSON object of a built-in kind as a Kubernetes protobuf body."""
    api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
    name = message_for(api_version, kind)
    if name is None:
        raise ProtobufError(f"no protobuf definition of {kind} in {api_version}")
    out = bytearray(MAGIC)
    meta = bytearray()
    _put_bytes(1, api_version.encode("utf-8"), meta)
    _put_bytes(2, kind.encode("utf-8"), meta)
    _put_bytes(1, bytes(meta), out)
    _put_bytes(2, _encode_message(name, obj), out)
    _put_bytes(3, b"", out)
    _put_bytes(4, b"", out)
    return bytes(out)


# --------------------------------------------------------------------------- OpenAPI v2 (gnostic)

OPENAPI_V2_MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
"""What kube-openapi answers (clients ask for the older ``...spec.v2@v1.0+protobuf``, which
is not a valid media type in a response)."""
_OA = "openapi.v2."
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _yaml(value: Any) -> str:
    return str(yaml.dump(value, Dumper=_Dumper, default_flow_style=False, sort_keys=False))


def _snake(key: str) -> str:
    if key == "$ref":
        return "_ref"
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def _named(value_type: str, obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"name": k, "value": _gnostic(value_type, v)} for k, v in obj.items()]


def _extensions(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"name": k, "value": {"yaml": _yaml(v)}} for k, v in obj.items()
            if k.startswith("x-")]


def _gnostic(name: str, value: Any) -> Any:
    """A value of an OpenAPI v2 document as the gnostic message ``name`` (a dict keyed by proto
    field names), as gnostic's compiler builds it: maps as lists of named values, ``x-``
    keys as vendor extensions, free values as YAML, each oneof chosen by the JSON's shape."""
    short = name.removeprefix(_OA)
    if short == "Any":
        return {"yaml": _yaml(value)}
    if short in ("TypeItem", "StringArray"):
        return {"value": list(value) if isinstance(value, list) else [value]}
    if short == "ItemsItem":
        items = value if isinstance(value, list) else [value]
        return {"schema": [_gnostic(_OA + "Schema", v) for v in items]}
    if short == "AdditionalPropertiesItem":
        if isinstance(value, bool):
            return {"boolean": value}
        return {"schema": _gnostic(_OA + "Schema", value)}
    if short in ("ParametersItem", "ResponseValue"):
        if "$ref" in value:
            return {"json_reference": {"_ref": value["$ref"],
                                       **({"description": value["description"]}
                                          if "description" in value else {})}}
        inner = "parameter" if short == "ParametersItem" else "response"
        return {inner: _gnostic(_OA + inner.capitalize(), value)}
    if short == "Parameter":
        if value.get("in") == "body":
            return {"body_parameter": _gnostic(_OA + "BodyParameter", value)}
        return {"non_body_parameter": _gnostic(_OA + "NonBodyParameter", value)}
    if short == "NonBodyParameter":
        kind = {"header": "header", "formData": "form_data", "query": "query",
                "path": "path"}.get(str(value.get("in")), "query")
        field = f"{kind}_parameter_sub_schema"
        return {field: _gnostic(_messages()[name].by_name[field].type, value)}
    if short == "SchemaItem":
        if value.get("type") == "file":
            return {"file_schema": _gnostic(_OA + "FileSchema", value)}
        return {"schema": _gnostic(_OA + "Schema", value)}
    if short == "SecurityDefinitionsItem":
        flows = {"implicit": "oauth2_implicit_security", "password": "oauth2_password_security",
                 "application": "oauth2_application_security",
                 "accessCode": "oauth2_access_code_security"}
        field = {"apiKey": "api_key_security", "basic": "basic_authentication_security"}.get(
            str(value.get("type")), flows.get(str(value.get("flow")), "api_key_security"))
        return {field: _gnostic(_messages()[name].by_name[field].type, value)}
    if short == "SecurityRequirement":
        return {"additional_properties": [
            {"name": k, "value": {"value": list(v)}} for k, v in value.items()]}
    if short == "Paths":
        return {"vendor_extension": _extensions(value),
                "path": _named(_OA + "PathItem",
                               {k: v for k, v in value.items() if not k.startswith("x-")})}
    if short == "Responses":
        return {"response_code": _named(_OA + "ResponseValue",
                                        {k: v for k, v in value.items()
                                         if not k.startswith("x-")}),
                "vendor_extension": _extensions(value)}
    msg = _messages()[name]
    if [f.name for f in msg.fields] == ["additional_properties"]:  # Definitions, Properties ...
        named = _messages()[msg.fields[0].type]
        return {"additional_properties": _named(named.by_name["value"].type, value)}
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key.startswith("x-"):
            continue
        f = msg.by_name.get(_snake(key))
        if f is None or item is None:
            continue
        if f.type in _messages():
            out[f.name] = ([_gnostic(f.type, v) for v in item] if f.repeated
                           else _gnostic(f.type, item))
        elif f.type == "double":
            out[f.name] = float(item)
        else:
            out[f.name] = item
    if "vendor_extension" in msg.by_name:
        out["vendor_extension"] = _extensions(value)
    return out


def openapi_v2_protobuf(document: Mapping[str, Any]) -> bytes:
    """An OpenAPI v2 document in the gnostic ``openapi.v2.Document`` encoding that client-go's
    ``OpenAPISchema()`` requests and decodes."""
    return _encode_message(_OA + "Document", _gnostic(_OA + "Document", document))
