"""The node's HTTP API (FastAPI on uvicorn).

Public: ``POST /predict``, ``GET /healthz``, ``GET /metrics``. Admin, behind a bearer token:
``POST /admin/deploy`` (bundle URI), ``POST /admin/rollback``, ``GET /admin/status``. A bundle
that fails verification is refused with the reason and the node keeps serving what it had.
"""

from __future__ import annotations

import hmac
import json
import logging
import time

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from cityfactory.compression.bundle import BundleError
from cityfactory.edge.metrics import NodeMetrics
from cityfactory.edge.models import InputError, ModelSlots, load, parse_rows

log = logging.getLogger("cityfactory.edge")


def create_app(node_id: str, public_pem: bytes, admin_token: str) -> FastAPI:
    app = FastAPI(title=f"City AI Factory edge node {node_id}")
    slots, metrics = ModelSlots(), NodeMetrics()
    app.state.slots = slots

    def admin(request: Request, authorization: str | None = Header(default=None)) -> None:
        supplied = (authorization or "").removeprefix("Bearer ")
        if not authorization or not hmac.compare_digest(supplied.encode(), admin_token.encode()):
            log.warning("refused admin call %s %s from %s: %s token", request.method, request.url.path,
                        request.client.host if request.client else "?", "missing" if not authorization else "wrong")
            raise HTTPException(401, "missing or wrong admin token", headers={"WWW-Authenticate": "Bearer"})

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        # The hot path: raw JSON in and out, on the event loop (onnxruntime takes microseconds
        # here), so no thread hand-off or response-model work per request.
        started = time.perf_counter()
        model = slots.current  # one read: a swap cannot change the model under this request
        if model is None:
            metrics.observe(503, time.perf_counter() - started)
            raise HTTPException(503, "no model loaded")
        try:
            payload = json.loads(await request.body())
            rows = parse_rows(payload if isinstance(payload, dict) else {}, model.features)
        except ValueError as exc:  # InputError, or a body that is not JSON
            metrics.observe(422, time.perf_counter() - started)
            raise HTTPException(422, str(exc) if isinstance(exc, InputError) else f"body: not JSON ({exc})") from None
        values = model.predict(rows)
        metrics.observe(200, time.perf_counter() - started, len(rows))
        body = json.dumps({"model_version": model.version, "predictions": values.tolist()})
        return Response(body, media_type="application/json")

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
            model = load(uri, public_pem)
        except BundleError as exc:
            log.warning("refused bundle %s: %s", uri, exc)
            raise HTTPException(422, f"bundle refused: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - unreadable or unloadable: refuse, keep serving
            log.warning("could not load bundle %s: %s", uri, exc)
            raise HTTPException(422, f"bundle refused: {type(exc).__name__}: {exc}") from None
        slots.swap_in(model)
        log.info("now serving version %s from %s", model.version, uri)
        return status()

    @app.post("/admin/rollback", dependencies=[Depends(admin)])
    def rollback():
        try:
            model = slots.roll_back()
        except LookupError as exc:
            raise HTTPException(409, str(exc)) from None
        log.info("rolled back to version %s", model.version if model else "none")
        return status()

    @app.get("/admin/status", dependencies=[Depends(admin)])
    def status():
        current, previous = slots.current, slots.previous
        return {"node": node_id, "model_version": current.version if current else None,
                "previous_version": previous.version if previous else None,
                "loaded_at": current.loaded_at if current else None}

    return app
