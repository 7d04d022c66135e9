"""``python -m cityfactory.edge serve --port 9001 --node-id n1 --public-key signing-public.pem``

The admin token comes from ``CITYFACTORY_EDGE_TOKEN`` (never a flag, so it stays out of ``ps``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cityfactory.edge")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run an edge inference node")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--node-id", required=True)
    serve.add_argument("--public-key", required=True, help="PEM of the bundle signing key")
    serve.add_argument("--bundle", help="bundle URI to load at start")
    args = parser.parse_args(argv)
    token = os.environ.get("CITYFACTORY_EDGE_TOKEN")
    if not token:
        print("CITYFACTORY_EDGE_TOKEN is not set: the admin API needs a token", file=sys.stderr)
        return 2
    import uvicorn

    from cityfactory.edge.models import load
    from cityfactory.edge.service import create_app

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.node_id} %(levelname)s %(message)s")
    public = Path(args.public_key).read_bytes()
    app = create_app(args.node_id, public, token)
    if args.bundle:
        app.state.slots.swap_in(load(args.bundle, public))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
