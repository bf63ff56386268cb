"""One file field of a multipart/form-data request, streamed straight from the socket.

FastAPI's ``UploadFile`` spools the whole body to a temporary file before the route runs, so an oversize
upload without a Content-Length would fill the disk before it could be refused, and every byte would be
written twice. Parsing the stream here lets ``Storage.receive`` hash, count and store the bytes as they
arrive, and give up at the size limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ktoforge_api.storage import TooLarge


class BadForm(ValueError):
    """The body is not a complete multipart form with the expected file field."""


class _FieldSink:
    """python-multipart callbacks keeping the data of the part named ``field`` (other parts are dropped)."""

    def __init__(self, field: str) -> None:
        self.field = field.encode()
        self.data: list[bytes] = []
        self.seen = self.ended = self._in_field = False
        self._header: list[bytes] = []
        self._name = self._disposition = b""

    def callbacks(self) -> dict:
        return {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_end": self._end}

    def _part_begin(self) -> None:
        self._in_field, self._disposition = False, b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._header.append(data[start:end])

    def _header_end(self) -> None:
        if self._name.lower() == b"content-disposition":
            self._disposition = b"".join(self._header)
        self._name, self._header = b"", []

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._in_field = options.get(b"name") == self.field and not self.seen
        self.seen = self.seen or self._in_field

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_field:
            self.data.append(data[start:end])

    def _end(self) -> None:
        self.ended = True


async def file_field(request: Request, field: str, limit: int) -> AsyncIterator[bytes]:
    """The bytes of form field ``field`` as they arrive; BadForm if it is missing or the body is cut short.

    ``limit`` caps the whole body (TooLarge), so junk parts around the file cannot stream forever either.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise BadForm("send the dataset as multipart/form-data with a field named 'file'")
    sink, total = _FieldSink(field), 0
    try:
        parser = MultipartParser(boundary, sink.callbacks())
    except Exception as exc:  # python-multipart refuses e.g. an overlong boundary
        raise BadForm(f"malformed multipart header: {exc}") from None
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise TooLarge(f"request body exceeds {limit} bytes")
        try:
            parser.write(chunk)
        except MultipartParseError as exc:
            raise BadForm(f"malformed multipart body: {exc}") from None
        if sink.data:
            yield b"".join(sink.data)
            sink.data.clear()
    if not sink.seen:
        raise BadForm(f"the form has no field named {field!r}")
    if not sink.ended:
        raise BadForm("the multipart body ended before its closing boundary (upload cut short?)")
