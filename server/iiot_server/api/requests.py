"""The platform's request class: JSON bodies decoded within bounds.

Litestar decodes a JSON body with msgspec into plain values first, then converts them to
the handler's type. msgspec raises ``UnicodeDecodeError`` on invalid UTF-8 in a string and
``RecursionError`` on nesting near Python's recursion limit (a body 980 levels deep did),
neither of which Litestar maps to a 400: both reached the catch-all as 500s. Here they
become :class:`~iiot_server.domain.errors.ValidationError` naming the member, and every
decoded body passes the domain's one depth bound before any handler sees it.
"""

from __future__ import annotations

from typing import Any

from litestar import Request

from ..domain.documents import MAX_JSON_DEPTH, check_json_depth, invalid_utf8, too_deep


class PlatformRequest(Request[Any, Any, Any]):
    """A Litestar request whose :meth:`json` refuses undecodable or too-deep bodies."""

    async def json(self) -> Any:
        try:
            value = await super().json()
        except UnicodeDecodeError as exc:
            raise invalid_utf8(await self.body(), exc) from None
        except RecursionError:
            raise too_deep(await self.body(), MAX_JSON_DEPTH) from None
        check_json_depth(value, field="", max_depth=MAX_JSON_DEPTH)
        return value
