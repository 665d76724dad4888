"""Discovery endpoints (RFC 7644 §4): what we publish is what we support."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g, request
from flask.typing import ResponseReturnValue

from connector import db, tenants
from scim.errors import Forbidden, NotFound
from scim.schemas import (
    CONNECTOR_GROUP,
    CONNECTOR_USER,
    LIST_RESPONSE,
    PUBLISHED_SCHEMAS,
    RESOURCE_TYPES,
    SERVICE_PROVIDER_CONFIG,
)


def service_provider_config(base_url: str, settings: Any) -> dict[str, Any]:
    return {
        "schemas": [SERVICE_PROVIDER_CONFIG],
        "documentationUri": f"{base_url}/ServiceProviderConfig",
        "patch": {"supported": True},
        "bulk": {"supported": True, "maxOperations": settings.bulk_max_operations,
                 "maxPayloadSize": settings.bulk_max_payload_bytes},
        "filter": {"supported": True, "maxResults": settings.max_results},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "The tenant's SCIM token: Authorization: Bearer <token>.",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": True,
        }],
        "meta": {"resourceType": "ServiceProviderConfig",
                 "location": f"{base_url}/ServiceProviderConfig"},
    }


def _list(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schemas": [LIST_RESPONSE], "totalResults": len(resources), "startIndex": 1,
            "itemsPerPage": len(resources), "Resources": resources}


def _no_filter() -> None:
    # RFC 7644 §4: a filter on a discovery endpoint SHOULD be answered with 403.
    if "filter" in request.args:
        raise Forbidden("Filtering is not supported on discovery endpoints.")


def _with_catalogue(schema: dict[str, Any]) -> dict[str, Any]:
    """Publish the caller's module names as `canonicalValues` of the `modules` attributes.

    The catalogue is per tenant, so it is only known when the request carried a valid token.
    """
    tenant = g.get("tenant")
    if tenant is None or schema.get("id") not in (CONNECTOR_USER, CONNECTOR_GROUP):
        return schema
    names = sorted(tenants.module_catalogue(db.get_session(), tenant.id).values())
    for attribute in schema.get("attributes", []):
        if attribute.get("name") == "modules" and names:
            attribute["canonicalValues"] = names
    return schema


def register(bp: Blueprint) -> None:
    from scim.views import base_url, scim_response

    @bp.get("/ServiceProviderConfig")
    def spc() -> ResponseReturnValue:
        settings = current_app.config["SETTINGS"].scim
        return scim_response(service_provider_config(base_url(), settings))

    @bp.get("/Schemas")
    def schemas() -> ResponseReturnValue:
        _no_filter()
        return scim_response(_list([_with_catalogue(s.to_scim(base_url()))
                                   for s in PUBLISHED_SCHEMAS]))

    @bp.get("/Schemas/<path:schema_id>")
    def schema(schema_id: str) -> ResponseReturnValue:
        for item in PUBLISHED_SCHEMAS:
            if item.id == schema_id:
                return scim_response(_with_catalogue(item.to_scim(base_url())))
        raise NotFound(f"No schema {schema_id}.")

    @bp.get("/ResourceTypes")
    def resource_types() -> ResponseReturnValue:
        _no_filter()
        return scim_response(_list([r.to_scim(base_url()) for r in RESOURCE_TYPES]))

    @bp.get("/ResourceTypes/<name>")
    def resource_type(name: str) -> ResponseReturnValue:
        for item in RESOURCE_TYPES:
            if item.name == name:
                return scim_response(item.to_scim(base_url()))
        raise NotFound(f"No resource type {name}.")
