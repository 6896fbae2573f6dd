"""The HTTP/1.1 protocol ``cds serve`` runs: uvicorn's httptools (llhttp, C) with a bound on
the request line and headers.

Why not h11, which bounds them itself (``h11_max_incomplete_event_size``, hardening #16):
h11 parses in Python and cost ~0.35 ms of CPU per typical hook call, more than the whole of
a bare FastAPI endpoint on httptools (measured by ``bench/account.py``). httptools buffers
a header of any size, so this subclass counts the bytes of each request's head as they
arrive and answers 431 (and closes) once they pass the limit, before the parser sees them:
a 64 MB header is refused after the first ``limit`` bytes, as with h11.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_LIMIT = 32_768
_END = b"\r\n\r\n"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools, refusing a request line plus headers over
    ``config.h11_max_incomplete_event_size`` bytes with 431."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_limit = int(
            getattr(self.config, "h11_max_incomplete_event_size", None) or DEFAULT_LIMIT
        )
        self._in_head = True  # the next bytes belong to a request line or headers
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far (an end split across chunks)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            room = self.head_limit - self._head_bytes
            if len(data) > room:
                seen = self._tail + data
                end = seen.find(_END)
                if end < 0 or end + len(_END) - len(self._tail) > room:
                    self._refuse()
                    return
            self._head_bytes += len(data)
            self._tail = data[-(len(_END) - 1) :]
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes, self._tail = True, 0, b""
        super().on_message_complete()

    def _refuse(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        msg = b"Request header fields too large"
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(msg)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + msg
        )
        self.transport.close()
