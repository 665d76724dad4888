"""SCIM protocol errors (RFC 7644 §3.12), one class per status and scimType.

    ScimError (status, scim_type, detail)
     ├── BadRequest 400
     │    ├── InvalidFilter   invalidFilter
     │    ├── TooMany         tooMany
     │    ├── InvalidSyntax   invalidSyntax
     │    ├── InvalidPath     invalidPath
     │    ├── NoTarget        noTarget
     │    ├── InvalidValue    invalidValue
     │    ├── InvalidVersion  invalidVers
     │    └── Mutability      mutability
     ├── Unauthorized 401
     ├── Forbidden 403
     ├── NotFound 404
     ├── MethodNotAllowed 405
     ├── Conflict 409
     │    └── Uniqueness      uniqueness
     ├── PreconditionFailed 412
     ├── PayloadTooLarge 413
     ├── UriTooLong 414
     ├── UnsupportedMediaType 415
     ├── ServiceUnavailable 503 (Retry-After)
     └── InternalError 500 (never carries internals)

Pure: raised anywhere in `scim/`, turned into a response in one place (`scim.views`).
"""

from __future__ import annotations

from typing import Any

from scim.schemas import ERROR


class ScimError(Exception):
    status = 500
    scim_type: str | None = None
    default_detail = "The request could not be processed."

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None):
        super().__init__(detail or self.default_detail)
        self.detail = detail or self.default_detail
        self.headers = headers or {}

    def to_scim(self) -> dict[str, Any]:
        body: dict[str, Any] = {"schemas": [ERROR], "status": str(self.status),
                                "detail": self.detail}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


class BadRequest(ScimError):
    status = 400
    default_detail = "The request is not valid."


class InvalidFilter(BadRequest):
    scim_type = "invalidFilter"
    default_detail = "The filter syntax is invalid or the filter is not supported."


class TooMany(BadRequest):
    scim_type = "tooMany"
    default_detail = "The request would return too many results."


class InvalidSyntax(BadRequest):
    scim_type = "invalidSyntax"
    default_detail = "The request body could not be parsed or violates the schema."


class InvalidPath(BadRequest):
    scim_type = "invalidPath"
    default_detail = "The path attribute is invalid or malformed."


class NoTarget(BadRequest):
    scim_type = "noTarget"
    default_detail = "The path did not yield an attribute or value that could be operated on."


class InvalidValue(BadRequest):
    scim_type = "invalidValue"
    default_detail = "A required value was missing, or a value was not compatible."


class InvalidVersion(BadRequest):
    scim_type = "invalidVers"
    default_detail = "The SCIM protocol version is not supported."


class Mutability(BadRequest):
    scim_type = "mutability"
    default_detail = "The change is incompatible with the attribute's mutability."


class Unauthorized(ScimError):
    status = 401
    default_detail = "Authorization failure: send 'Authorization: Bearer <tenant SCIM token>'."

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None):
        # RFC 6750 §3: a 401 names the scheme the client must use.
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="SCIM"',
                                          **(headers or {})})


class Forbidden(ScimError):
    status = 403
    default_detail = "The operation is not permitted."


class NotFound(ScimError):
    status = 404
    default_detail = "The resource was not found."


class MethodNotAllowed(ScimError):
    status = 405
    default_detail = "The method is not supported on this endpoint."


class Conflict(ScimError):
    status = 409
    default_detail = "The request conflicts with the state of the resources."


class Uniqueness(Conflict):
    scim_type = "uniqueness"
    default_detail = "A unique attribute value is already in use."


class PreconditionFailed(ScimError):
    status = 412
    default_detail = "The resource has changed: its version does not match If-Match."


class PayloadTooLarge(ScimError):
    status = 413
    default_detail = "The request body is too large."


class UriTooLong(ScimError):
    status = 414
    default_detail = ("The URL is too long; send a long filter in the body of POST "
                      "/Users/.search, /Groups/.search or /.search.")


class UnsupportedMediaType(ScimError):
    status = 415
    default_detail = "Send application/scim+json or application/json."


class ServiceUnavailable(ScimError):
    status = 503
    default_detail = "The service is temporarily unavailable; retry later."


class InternalError(ScimError):
    status = 500
    default_detail = "An internal error occurred; it has been logged."
