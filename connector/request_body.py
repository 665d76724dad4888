"""Reading a request's body within the body limit, for every surface (SCIM, admin API)."""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from connector.slow_clients import CUT_AT_LIMIT


def body_bytes() -> bytes:
    """The request body, refused with 413 past the body limit (`MAX_CONTENT_LENGTH`)
    however it arrives. Werkzeug refuses a Content-Length over it, but cuts a chunked
    body (no Content-Length) at the limit without a word, and the request went on with
    the first megabyte of it."""
    limit = request.max_content_length
    stream = request.environ.get("wsgi.input")
    if (limit is None or request.content_length is not None or stream is None
            or not request.environ.get("wsgi.input_terminated")):
        return request.get_data(cache=False)
    data: bytes = stream.read(limit + 1)
    if len(data) > limit:
        raise RequestEntityTooLarge(too_large())
    return data


def too_large() -> str:
    """What a 413 says on every surface: how large the body is (when the client said),
    the limit and the setting behind it, and what to do. (Werkzeug's own words were
    "The data value transmitted exceeds the capacity limit.")"""
    known = request.content_length and not request.environ.get(CUT_AT_LIMIT)
    size = f"is {request.content_length:,} bytes" if known else "is larger than that"
    return (f"This server takes request bodies of at most {request.max_content_length or 0:,} "
            f"bytes ([server] max_body_bytes); this one {size}. Send it in smaller requests.")
