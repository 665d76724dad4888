"""`attributes` and `excludedAttributes` (RFC 7644 §3.4.2.5, §3.9), pure.

The views ask `includes()` before loading anything costly (a group's members, a
user's groups), so `GET /Groups?excludedAttributes=members` never reads a membership.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scim.errors import InvalidValue
from scim.schemas import AttrRef, ResourceType

ALWAYS = {"id", "schemas"}


@dataclass(frozen=True)
class Projection:
    resource_type: ResourceType
    include: tuple[AttrRef, ...] = ()
    exclude: tuple[AttrRef, ...] = ()

    def includes(self, name: str) -> bool:
        """Whether the top-level core attribute `name` will appear in the response."""
        lowered = name.lower()
        if self.include:
            return any(r.is_core and r.attribute.name.lower() == lowered for r in self.include)
        return not any(r.is_core and r.attribute.name.lower() == lowered
                       and r.sub_attribute is None for r in self.exclude)

    def apply(self, resource: dict[str, Any]) -> dict[str, Any]:
        if self.include:
            return self._keep(resource)
        if self.exclude:
            return self._drop(resource)
        return resource

    def _keep(self, resource: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in resource.items() if k in ALWAYS}
        for ref in self.include:
            section_key = None if ref.is_core else ref.schema.id
            source = resource if section_key is None else resource.get(section_key, {})
            if ref.attribute.name not in source:
                continue
            target = out if section_key is None else out.setdefault(section_key, {})
            value = source[ref.attribute.name]
            if ref.sub_attribute is None:
                target[ref.attribute.name] = value
            else:
                _merge_sub(target, ref.attribute.name, ref.sub_attribute.name, value)
        return _fix_schemas(out)

    def _drop(self, resource: dict[str, Any]) -> dict[str, Any]:
        out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in resource.items()}
        for ref in self.exclude:
            if ref.attribute.name in ALWAYS:
                continue
            section = out if ref.is_core else out.get(ref.schema.id)
            if not isinstance(section, dict) or ref.attribute.name not in section:
                continue
            if ref.sub_attribute is None:
                del section[ref.attribute.name]
            else:
                section[ref.attribute.name] = _without_sub(section[ref.attribute.name],
                                                           ref.sub_attribute.name)
        return _fix_schemas(out)


def _merge_sub(target: dict[str, Any], name: str, sub: str, value: Any) -> None:
    if isinstance(value, list):
        existing = target.get(name) or [{} for _ in value]
        for slot, item in zip(existing, value, strict=False):
            if isinstance(item, dict) and sub in item:
                slot[sub] = item[sub]
        target[name] = existing
    elif isinstance(value, dict) and sub in value:
        target.setdefault(name, {})[sub] = value[sub]


def _without_sub(value: Any, sub: str) -> Any:
    if isinstance(value, list):
        return [{k: v for k, v in item.items() if k != sub} if isinstance(item, dict) else item
                for item in value]
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k != sub}
    return value


def _fix_schemas(resource: dict[str, Any]) -> dict[str, Any]:
    """Drop emptied extension sections and keep `schemas` listing only what is there."""
    schemas = resource.get("schemas", [])
    kept = [s for s in schemas if not s.startswith("urn:") or s == schemas[0]
            or resource.get(s)]
    for urn in schemas[1:]:
        if urn in resource and not resource[urn]:
            del resource[urn]
    resource["schemas"] = kept
    return resource


def parse_projection(resource_type: ResourceType, attributes: str | None,
                     excluded: str | None) -> Projection:
    """Resolve the comma-separated lists; an unknown attribute is a 400. A schema URN
    alone (`urn:…:enterprise:2.0:User`) stands for all of that schema's attributes."""
    return Projection(resource_type, _refs(resource_type, attributes),
                      _refs(resource_type, excluded))


def _refs(resource_type: ResourceType, text: str | None) -> tuple[AttrRef, ...]:
    if not text:
        return ()
    refs: list[AttrRef] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        schema = resource_type.schema_by_urn(part)
        if schema is not None:  # a whole schema: every attribute it defines
            refs.extend(_resolved(resource_type, f"{schema.id}:{a.name}")
                        for a in schema.attributes)
            continue
        refs.append(_resolved(resource_type, part))
    return tuple(refs)


def _resolved(resource_type: ResourceType, part: str) -> AttrRef:
    ref = resource_type.resolve(part)
    if ref is None:
        raise InvalidValue(f"Unknown attribute {part!r} in attributes/excludedAttributes.")
    return ref
