"""The node's HTTP API (FastAPI on uvicorn).

Public: ``POST /predict``, ``GET /healthz``, ``GET /metrics``. Admin, behind a bearer token:
``POST /admin/deploy`` (bundle URI), ``POST /admin/rollback`` (a signed order naming the version),
``GET /admin/status``, ``POST /admin/token`` (the fleet's new admin token, authorised by the
current one: rotation without touching the model), and the served-prediction log: ``POST /admin/predictions/rotate`` (closed
segments), ``GET`` / ``DELETE /admin/predictions/<segment>``. A predict request may name each
row's series and target hour (``keys``) and its purpose (``serve``, or ``bake`` for a rollout's
health check, which its gate measures); every answered ``serve`` row is logged before the answer
goes out. The node is pinned to one scenario and registered model and to the fleet's
bundle folder; it keeps the highest version it accepted and refuses lower ones without a signed
rollback order; deploying the version already serving changes nothing. A refused bundle leaves
the node serving what it had. Request bodies and rows per request are capped (413), every response
status is counted in ``/metrics``.

Who can do what: anyone who reaches the node may ask for predictions, within a per-client rate
(429 beyond). Only requests carrying the scenario's consumer token (``Authorization: Bearer``) are
logged for the monitor when the node is given one: an anonymous client gets answers but cannot
put a row in front of the monitor. Keys must fall in the node's window (``KeyWindow``). The admin
routes need the admin token; rollbacks, in addition, a signed single-use order.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from cityfactory.compression.bundle import BundleError
from cityfactory.compression.preprocessing import ImageInputError
from cityfactory.edge.admin_token import AdminToken, TokenRefused
from cityfactory.edge.image_requests import predict_images
from cityfactory.edge.metrics import NodeMetrics
from cityfactory.edge.models import (
    Downgrade,
    InputError,
    LoadedModel,
    ModelSlots,
    Pin,
    load,
    parse_rows,
)
from cityfactory.edge.orders import OrderError, SpentOrders, verify_rollback
from cityfactory.edge.prediction_log import (
    KeyWindow,
    PredictionLog,
    RowKeyError,
    log_lines,
    parse_keys,
)
from cityfactory.edge.rate_limit import RateLimiter
from cityfactory.security.bearer import holds

log = logging.getLogger("cityfactory.edge")
INLINE_BYTES = 256 * 1024  # bodies up to this are handled on the event loop (well under a millisecond)
KNOWN_PATHS = {"/healthz", "/metrics", "/admin/deploy", "/admin/rollback", "/admin/status", "/admin/token"}
DROPPED_LOG_EVERY = 60.0  # seconds between log lines about dropped prediction-log rows


@dataclass(frozen=True)
class Serving:
    """What the node accepts and from whom: sizes per request (413 beyond), the keys' window, the
    consumer token whose requests are logged (None: every request's), the per-client rate."""

    max_body_bytes: int = 1 << 20
    max_rows: int = 4096
    max_pixels: int = 16_000_000
    window: KeyWindow = field(default_factory=KeyWindow)
    consumer_token: str | None = None
    rate: RateLimiter | None = field(default=None, compare=False)


class CountResponses:
    """Plain ASGI in front of the app: ``POST /predict`` is answered here directly (the hot path:
    no routing, no dependency work), every other response's status is counted."""

    def __init__(self, app, metrics: NodeMetrics, predict, serving: Serving, admin_token: AdminToken):
        self.app, self.metrics, self.predict, self.serving, self.admin_token = app, metrics, predict, serving, admin_token

    def _wait(self, scope, authorization: bytes | None) -> float:
        """How long this client must wait (0: go on); the admin token's holder (a rollout's bake) is not limited."""
        if self.serving.rate is None or (authorization and self.admin_token.holds(authorization)):
            return 0.0
        return self.serving.rate.wait_seconds(scope["client"][0] if scope.get("client") else "?")

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/predict" and scope["method"] == "POST":
            request_headers = dict(scope["headers"])
            declared = request_headers.get(b"content-length", b"0")
            headers = [(b"content-type", b"application/json")]
            wait = self._wait(scope, request_headers.get(b"authorization"))
            if wait:
                self.metrics.observe(429, 0.0)
                status, body = 429, b'{"detail": "too many requests from this client: slow down"}'
                headers.append((b"retry-after", RateLimiter.retry_after(wait).encode()))
            elif not declared.isdigit() or int(declared) > self.serving.max_body_bytes:
                self.metrics.observe(413, 0.0)
                status, body = 413, json.dumps({"detail": f"body: more than {self.serving.max_body_bytes} bytes"}).encode()
            else:
                status, body = await self.predict(scope, receive)
            await send({"type": "http.response.start", "status": status,
                        "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return None
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        if scope["path"].startswith("/admin/predictions/"):
            path = "/admin/predictions"
        sent = {}

        async def counted(message):
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                self.metrics.observe_other(path, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except Exception:
            if "status" not in sent:
                self.metrics.observe_other(path, 500)
            raise


class Refused(Exception):
    """A predict request answered with ``status`` and ``detail`` (and counted)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _predict(body: bytes, model, serving: Serving, node_id: str, logged: bool, content_type: str = "",
             query: bytes = b"") -> tuple[bytes, int, bytes]:
    """The answer, the rows (or images) answered, and (if ``logged``) the prediction log's lines."""
    served_at, max_rows = time.time(), serving.max_rows
    if model.takes_images:
        try:
            return predict_images(model, body, content_type, query, max_rows, serving.max_pixels, node_id, served_at,
                                  logged, serving.window)
        except ImageInputError as exc:
            raise Refused(exc.status, exc.detail) from None
        except RowKeyError as exc:
            raise Refused(422, str(exc)) from None
    try:
        payload = json.loads(body)
    except RecursionError:
        raise Refused(422, "body: JSON nested too deeply") from None
    except ValueError as exc:
        raise Refused(422, f"body: not JSON ({exc})") from None
    try:
        # a body whose only string is the "rows" key and with no true/false/null holds numbers only
        numbers_only = body.count(b'"') == 2 and not any(word in body for word in (b"true", b"false", b"null"))
        rows = parse_rows(payload if isinstance(payload, dict) else {}, model.features, max_rows, numbers_only)
        keys, purpose = parse_keys(payload, len(rows), served_at, serving.window)
    except InputError as exc:
        raise Refused(413 if str(exc).startswith("rows: ") and "at most" in str(exc) else 422, str(exc)) from None
    except RowKeyError as exc:
        raise Refused(422, str(exc)) from None
    values = model.predict(rows)
    try:
        answer = json.dumps({"model_version": model.version, "predictions": values.tolist()}, allow_nan=False)
    except ValueError:
        raise Refused(500, "the model produced a value that is not a finite number") from None
    lines = log_lines(served_at, node_id, model.version, rows, values, keys, purpose) if logged else b""
    return answer.encode(), len(rows), lines


def create_app(node_id: str, public_pem: bytes, admin_token: AdminToken, pin: Pin, slots: ModelSlots | None = None,
               serving: Serving | None = None, served: PredictionLog | None = None,
               spent: SpentOrders | None = None) -> FastAPI:
    from cityfactory.security.signing import load_public_key

    public = load_public_key(public_pem)  # the caller validated it; fails closed here too
    app = FastAPI(title=f"City AI Factory edge node {node_id}")
    slots, metrics, spent, serving = slots or ModelSlots(), NodeMetrics(), spent or SpentOrders(), serving or Serving()
    max_body_bytes, max_rows = serving.max_body_bytes, serving.max_rows
    app.state.slots = slots
    last_drop_logged = [0.0]

    app.add_middleware(CountResponses, metrics=metrics, predict=lambda scope, receive: predict(scope, receive),
                       serving=serving, admin_token=admin_token)

    def openapi() -> dict:
        """FastAPI's schema of the routes, plus ``POST /predict`` (answered in plain ASGI) with the
        loaded model's features: made anew on each call, since a deploy changes them."""
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schema["paths"]["/predict"] = {"post": predict_operation(slots.current, max_rows)}
        return schema

    app.openapi = openapi

    def admin(request: Request, authorization: str | None = Header(default=None)) -> None:
        if not admin_token.holds(authorization):
            log.warning("refused admin call %s %s from %s: %s token", request.method, request.url.path,
                        request.client.host if request.client else "?", "missing" if not authorization else "wrong")
            raise HTTPException(401, "missing or wrong admin token", headers={"WWW-Authenticate": "Bearer"})

    async def predict(scope, receive) -> tuple[int, bytes]:
        """The hot path, as plain ASGI (no routing or dependency work per request)."""
        started = time.perf_counter()
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        query = scope.get("query_string", b"")
        status, rows = 200, 0
        try:
            logged = served is not None
            if serving.consumer_token is not None and b"authorization" in headers:
                if not holds(headers[b"authorization"], serving.consumer_token) and \
                        not admin_token.holds(headers[b"authorization"]):
                    raise Refused(401, "authorization: not this scenario's consumer token (send none to be answered unlogged)")
            elif serving.consumer_token is not None:
                logged = False  # anonymous: answered, never in front of the monitor
            body = bytearray()
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > max_body_bytes:
                    raise Refused(413, f"body: more than {max_body_bytes} bytes")
            model = slots.current  # one read: a swap cannot change the model under this request
            if model is None:
                raise Refused(503, "no model loaded")
            request = (bytes(body), model, serving, node_id, logged, content_type, query)
            if len(body) <= INLINE_BYTES and not model.takes_images:
                answer, rows, lines = _predict(*request)
            else:  # a big batch or images to decode: off the event loop, so health checks stay prompt
                answer, rows, lines = await run_in_threadpool(_predict, *request)
            if lines:
                try:
                    if not await served.append(lines):  # full: answered, not logged, counted
                        metrics.log_dropped += rows
                        if time.monotonic() - last_drop_logged[0] > DROPPED_LOG_EVERY:
                            last_drop_logged[0] = time.monotonic()
                            log.warning("prediction log full (%d bytes wait to be collected): served rows are not "
                                        "logged until the collector takes them; %d dropped so far",
                                        served.max_bytes, metrics.log_dropped)
                except OSError as exc:  # serving goes on; the gap shows in the log and the metrics
                    metrics.unlogged += rows
                    log.warning("could not log %d served rows: %s", rows, exc)
            return 200, answer
        except Refused as refused:
            status = refused.status
            return status, json.dumps({"detail": refused.detail}).encode()
        except Exception:
            status = 500
            log.exception("predict failed")
            return 500, b'{"detail": "internal error"}'
        finally:
            metrics.observe(status, time.perf_counter() - started, rows)

    @app.get("/healthz")
    def healthz():
        model = slots.current
        if model is None:
            return JSONResponse({"status": "no model", "node": node_id}, status_code=503)
        return {"status": "ok", "node": node_id, "model_version": model.version}

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus():
        model = slots.current
        return metrics.render(node_id, model.version if model else None)

    @app.post("/admin/deploy", dependencies=[Depends(admin)])
    def deploy(payload: dict):
        uri = payload.get("uri")
        if not isinstance(uri, str):
            raise HTTPException(422, "uri: expected the bundle's URI")
        try:
            model = load(uri, public_pem, pin)
            changed = slots.swap_in(model)
        except Downgrade as exc:
            log.warning("refused bundle %s: %s", uri, exc)
            raise HTTPException(409, f"bundle refused: {exc}") from None
        except BundleError as exc:
            log.warning("refused bundle %s: %s", uri, exc)
            raise HTTPException(422, f"bundle refused: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - unreadable or unloadable: refuse, keep serving
            log.warning("could not load bundle %s: %s", uri, exc)
            raise HTTPException(422, f"bundle refused: {type(exc).__name__}: {exc}") from None
        log.info("%s version %s from %s", "now serving" if changed else "already serving", model.version, uri)
        return status()

    @app.post("/admin/rollback", dependencies=[Depends(admin)])
    def rollback(payload: dict):
        try:
            target = verify_rollback(payload.get("order"), public, node_id, pin.scenario, spent)
            model = slots.roll_back_to(target)
        except OrderError as exc:
            raise HTTPException(403, str(exc)) from None
        except LookupError as exc:
            raise HTTPException(409, str(exc)) from None
        log.info("rolled back to version %s", model.version if model else "none")
        return status()

    @app.post("/admin/token", dependencies=[Depends(admin)])
    def rotate_token(payload: dict):
        """The fleet's new admin token (this request's token is refused from now on); the model stays."""
        token = payload.get("token")
        try:
            if not isinstance(token, str):
                raise TokenRefused("token: expected the new token")
            admin_token.rotate(token)
        except TokenRefused as exc:
            raise HTTPException(422, str(exc)) from None
        log.info("admin token rotated")
        return {"node": node_id, "rotated": True}

    @app.post("/admin/predictions/rotate", dependencies=[Depends(admin)])
    def rotate_predictions():
        """Close the open segment; the closed ones (oldest first) wait to be collected."""
        return {"node": node_id, "segments": served.rotate() if served else []}

    @app.get("/admin/predictions/{segment}", dependencies=[Depends(admin)])
    def read_predictions(segment: str):
        """A closed segment, streamed (its size does not pass through memory)."""
        try:
            if served is None:
                raise LookupError(f"no closed segment {segment!r}: this node keeps no prediction log")
            return FileResponse(served.path(segment), media_type="application/x-ndjson")
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.delete("/admin/predictions/{segment}", dependencies=[Depends(admin)])
    def remove_predictions(segment: str):
        try:
            if served:
                served.remove(segment)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        return {"removed": segment}

    @app.get("/admin/status", dependencies=[Depends(admin)])
    def status():
        current, previous = slots.current, slots.previous
        return {"node": node_id, "scenario": pin.scenario, "registered_model": pin.registered_model,
                "model_version": current.version if current else None,
                "previous_version": previous.version if previous else None,
                "highest_version": slots.highest, "loaded_at": current.loaded_at if current else None}

    return app


def predict_operation(model: LoadedModel | None, max_rows: int) -> dict:
    """The OpenAPI operation of ``POST /predict`` for ``model``: every feature named, in order."""
    if model is None:
        return {"summary": "Predict (no model loaded: answers 503 until a bundle is deployed)",
                "responses": {"503": {"description": "no model loaded"}}}
    if model.takes_images:
        return image_operation(model, max_rows)
    features, output = model.features, model.manifest["outputs"][0]
    named = {"type": "object", "title": "Row by feature name", "additionalProperties": False, "required": features,
             "properties": {f: {"type": "number", "format": "float"} for f in features}}
    ordered = {"type": "array", "title": "Row as values in feature order", "items": {"type": "number", "format": "float"},
               "minItems": len(features), "maxItems": len(features)}
    body = {"type": "object", "required": ["rows"], "properties": {"rows": {
        "type": "array", "minItems": 1, "maxItems": max_rows, "items": {"oneOf": [named, ordered]}}}}
    answer = {"type": "object", "properties": {
        "model_version": {"type": "string"},
        "predictions": {"type": "array", "items": {"type": "number"},
                        "description": f"{output.get('label', output.get('target', ''))} ({output.get('unit', '')}), one per row"}}}
    return {
        "summary": f"Predict with model version {model.version}",
        "description": "Features as the model was trained on them (categories one-hot encoded, one 0/1 column "
                       "per value, as named): " + ", ".join(features),
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {"200": {"description": "one prediction per row", "content": {"application/json": {"schema": answer}}},
                      "413": {"description": "body or rows over the node's limits"},
                      "422": {"description": "a row that does not fit: the message names the field"},
                      "503": {"description": "no model loaded"}},
    }


def image_operation(model: LoadedModel, max_images: int) -> dict:
    """The OpenAPI operation of ``POST /predict`` for a model that takes images."""
    classes, prep = model.manifest["outputs"][0]["classes"], model.manifest["preprocessing"]
    binary = {"type": "string", "format": "binary"}
    answer = {"type": "object", "properties": {
        "model_version": {"type": "string"},
        "predictions": {"type": "array", "items": {"type": "array", "items": {"type": "number"}},
                        "description": "per image, the probability of each class: " + ", ".join(classes)},
        "classes": {"type": "array", "items": {"type": "string", "enum": classes}, "description": "per image, the class"}}}
    return {
        "summary": f"Classify images with model version {model.version}",
        "description": (f"One image as the raw body (query: series, predicted_for, purpose), or up to {max_images} as "
                        f"multipart 'image' parts (fields: keys as JSON, purpose). PNG or JPEG by content; the node "
                        f"converts to {prep['mode']} and resizes to {prep['size']}x{prep['size']}."),
        "requestBody": {"required": True, "content": {
            "image/png": {"schema": binary}, "image/jpeg": {"schema": binary},
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "array", "items": binary, "maxItems": max_images},
                "keys": {"type": "string", "description": "JSON list of {series, predicted_for}, one per image"},
                "purpose": {"type": "string", "enum": ["serve", "bake"]}}}}}},
        "responses": {"200": {"description": "one answer per image", "content": {"application/json": {"schema": answer}}},
                      "413": {"description": "body, images or pixels over the node's limits"},
                      "415": {"description": "not a PNG or JPEG image (by content), or the wrong media type"},
                      "422": {"description": "keys or purpose that do not fit"},
                      "503": {"description": "no model loaded"}},
    }
