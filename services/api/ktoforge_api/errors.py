"""Error responses shaped like FastAPI's own validation errors, so clients parse one format."""

from __future__ import annotations

from fastapi import HTTPException


def unprocessable(loc: list[str], msg: str, kind: str = "value_error") -> HTTPException:
    """422 naming where the problem is (e.g. ["body", "model"] or ["file", "line 3"])."""
    return HTTPException(422, detail=[{"loc": loc, "msg": msg, "type": kind}])
