"""``python -m cityfactory.edge serve --port 9001 --node-id n1 --public-key signing-public.pem
--scenario S --registered-model M --bundle-base s3://lake/bundles/S/``

The admin token comes from ``CITYFACTORY_EDGE_TOKEN`` (never a flag, so it stays out of ``ps``) until
it is rotated (``POST /admin/token``): then from the digest kept in ``--state-dir``; the
scenario's consumer token, if set, from ``CITYFACTORY_CONSUMER_TOKEN``: then only requests carrying it
are logged for the monitor.
A key that is not an Ed25519 public key stops the node at start (fail closed).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cityfactory.edge")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run an edge inference node")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--node-id", required=True)
    serve.add_argument("--public-key", required=True, help="PEM of the bundle signing key")
    serve.add_argument("--scenario", required=True, help="the only scenario whose bundles this node loads")
    serve.add_argument("--registered-model", required=True, help="the only registered model it serves")
    serve.add_argument("--bundle-base", required=True, help="the fleet's bundle folder; deploy URIs must be under it")
    serve.add_argument("--state-dir", help="where the highest accepted version is kept across restarts")
    serve.add_argument("--prediction-log", help="folder for what the node served (kept until collected); none: not logged")
    serve.add_argument("--max-body-bytes", type=int, default=1 << 20)
    serve.add_argument("--max-rows", type=int, default=4096, help="rows (or images) per request")
    serve.add_argument("--max-pixels", type=int, default=16_000_000, help="pixels per image")
    serve.add_argument("--key-past-hours", type=float, default=48, help="how far before now a key's predicted_for may lie")
    serve.add_argument("--key-ahead-hours", type=float, default=48, help="how far after now a key's predicted_for may lie")
    serve.add_argument("--log-max-bytes", type=int, default=256 << 20, help="prediction log waiting to be collected, at most")
    serve.add_argument("--rate", type=float, default=200, help="predict requests per second per client, on average (0: no limit)")
    serve.add_argument("--burst", type=int, default=400, help="predict requests a client may send at once")
    serve.add_argument("--bundle", help="bundle URI to load at start")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    token = os.environ.get("CITYFACTORY_EDGE_TOKEN")
    if not token:
        print("CITYFACTORY_EDGE_TOKEN is not set: the admin API needs a token", file=sys.stderr)
        return 2
    import uvicorn
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from cityfactory.edge.admin_token import AdminToken
    from cityfactory.edge.models import ModelSlots, Pin, load
    from cityfactory.edge.orders import SpentOrders
    from cityfactory.edge.prediction_log import KeyWindow, PredictionLog
    from cityfactory.edge.rate_limit import RateLimiter
    from cityfactory.edge.service import Serving, create_app
    from cityfactory.security.signing import load_public_key

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.node_id} %(levelname)s %(message)s")
    public = Path(args.public_key).read_bytes()
    try:
        usable = isinstance(load_public_key(public), Ed25519PublicKey)
        problem = "another kind of key"
    except ValueError as exc:
        usable, problem = False, str(exc)
    if not usable:
        print(f"--public-key {args.public_key}: not a usable Ed25519 public key ({problem}); refusing to start", file=sys.stderr)
        return 2
    pin = Pin(args.scenario, args.registered_model, args.bundle_base)
    state = hashlib.sha256(f"{args.scenario}|{args.registered_model}|{args.bundle_base}".encode()).hexdigest()[:12]
    slots = ModelSlots(Path(args.state_dir) / f"{args.node_id}-{state}.json" if args.state_dir else None)
    spent = SpentOrders(Path(args.state_dir) / f"{args.node_id}-{state}-orders.json" if args.state_dir else None)
    served = (PredictionLog(Path(args.prediction_log) / f"{args.node_id}-{state}", args.log_max_bytes)
              if args.prediction_log else None)
    serving = Serving(args.max_body_bytes, args.max_rows, args.max_pixels, KeyWindow(args.key_past_hours, args.key_ahead_hours),
                      os.environ.get("CITYFACTORY_CONSUMER_TOKEN") or None,
                      RateLimiter(args.rate, args.burst) if args.rate > 0 else None)
    admin_token = AdminToken(token, Path(args.state_dir) / f"{args.node_id}-{state}-admin-token.sha256"
                             if args.state_dir else None)
    app = create_app(args.node_id, public, admin_token, pin, slots, serving, served, spent)
    if args.bundle:
        slots.swap_in(load(args.bundle, public, pin))
    else:
        try:
            if restored := slots.restore(lambda uri: load(uri, public, pin)):
                logging.getLogger("cityfactory.edge").info("serving version %s again, as before the restart", restored.version)
        except Exception as exc:  # noqa: BLE001 - refused or unreadable now: start empty, deploy again
            logging.getLogger("cityfactory.edge").warning("could not serve the bundle served before the restart: %s", exc)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    if served is not None:
        served.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
