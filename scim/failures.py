"""Turn domain and storage failures into SCIM errors: the one place this happens."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError, OperationalError, PendingRollbackError

from connector import db, limits
from connector import errors as domain
from scim.errors import (
    BadRequest,
    Forbidden,
    InternalError,
    InvalidValue,
    NotFound,
    PreconditionFailed,
    ScimError,
    ServiceUnavailable,
    Uniqueness,
)


def to_scim_error(exc: Exception) -> ScimError:
    """Map domain errors onto RFC 7644 §3.12 errors; the one place this happens."""
    if isinstance(exc, ScimError):
        return exc
    if isinstance(exc, domain.ProvisioningPaused):
        return ServiceUnavailable(exc.message, headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, domain.Conflict):
        return Uniqueness(exc.message)
    if isinstance(exc, domain.VersionMismatch):
        return PreconditionFailed(exc.message)
    if isinstance(exc, (domain.InvalidReference, domain.UnknownModule)):
        return InvalidValue(exc.message)
    if isinstance(exc, domain.NotFound):
        return NotFound(exc.message)
    if isinstance(exc, domain.StatusChangeRefused):
        return BadRequest(exc.message)
    if isinstance(exc, domain.WrongProvisioningPath):
        return Forbidden(exc.message)
    if isinstance(exc, limits.ValueTooLong):
        return InvalidValue(exc.message)
    if db.refused_value(exc):
        return InvalidValue("A value is too large or not valid for the database to store; "
                            "shorten the longest values (docs/scim.md, \"Maximum lengths\").")
    if isinstance(exc, IntegrityError):
        return Uniqueness("A unique value is already in use (concurrent write).")
    if isinstance(exc, (OperationalError, PendingRollbackError)):
        return ServiceUnavailable("The database is busy or unreachable; retry.",
                                  headers={"Retry-After": "5"})
    return InternalError()
