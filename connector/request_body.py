"""Reading a request's body within the body limit, for every surface (SCIM, admin API)."""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge


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
        raise RequestEntityTooLarge(f"The body is larger than {limit:,} bytes.")
    return data
