"""Hot API routes answered without BentoML's generic per-request endpoint machinery.

BentoML runs every API call through a chain built for any input type: context middleware, router, request
wrapper, media-type lookup, serde, ``inspect.signature`` of the function (on every call), argument
binding and response headers. For the JSON routes of the prediction service that chain costs about as
much CPU as the prediction itself. :class:`DirectRoutes` is a pure ASGI middleware (inside BentoML's
traffic, metrics and tracing middlewares and the API-key check, so those still apply) that answers
``POST`` to the listed routes itself, with the same contract:

- the body is validated by the API's own input model (``service.apis[name].input_spec``), so a bad
  request gets BentoML's exact 400 body (``error`` plus pydantic's ``detail`` list naming each field);
- the API's function is called with the model's fields, as BentoML calls it;
- an exception is logged and answered with BentoML's 500 body;
- the response carries BentoML's ``Server`` header.

Anything else (other routes, methods or media types, or before the service instance exists) goes
through BentoML unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse, Response

log = logging.getLogger("rtml.serving")

_SERVER_ERROR = {"error": "An unexpected error has occurred, please check the server log."}


class DirectRoutes:
    """ASGI middleware: ``routes`` (path -> API name of ``service``) answered directly on ``instance()``."""

    def __init__(self, app: Any, service: Any, instance: Callable[[], Any], routes: dict[str, str]) -> None:
        self.app = app
        self.instance = instance
        self.server = f"BentoML Service/{service.name}"
        # path -> (validate the JSON body, the API's plain function)
        self.routes = {
            path: (service.apis[name].input_spec.model_validate_json, service.apis[name].func)
            for path, name in routes.items()
        }

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        route = self.routes.get(scope.get("path")) if scope["type"] == "http" and scope["method"] == "POST" else None
        target = self.instance() if route is not None else None
        if target is None or not _json_body(scope):
            await self.app(scope, receive, send)
            return
        validate, func = route
        body = await _read_body(receive)
        try:
            request = validate(body or b"{}")
        except ValidationError as exc:
            response: Response = JSONResponse(
                {
                    "error": f"{exc.error_count()} validation error for {exc.title}",
                    "detail": exc.errors(include_context=False, include_input=False),
                },
                status_code=400,
            )
        else:
            try:
                response = await func(target, **request.__dict__)
                if not isinstance(response, Response):
                    response = JSONResponse(response)
            except Exception:  # noqa: BLE001 - answered like BentoML: logged, generic 500
                log.exception("%s %s failed", scope["method"], scope["path"])
                response = JSONResponse(_SERVER_ERROR, status_code=500)
        response.headers["Server"] = self.server
        await response(scope, receive, send)


def _json_body(scope: dict) -> bool:
    """True unless the request names a media type other than JSON (those go through BentoML)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return True


async def _read_body(receive: Callable) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    while message.get("more_body", False):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)
