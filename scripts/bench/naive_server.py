#!/usr/bin/env python3
"""The baseline for bench_output.py: the same endpoint without the index.

Every request skips ``offset`` lines from the start of output.jsonl and returns the
next ``limit`` ones — what a first version does. It splices raw lines exactly like
stimserver, checks the same bearer token, and reads the line count once at start,
so the only difference measured is the index.

    python scripts/bench/naive_server.py --port 8120 --file DATA/…/stim/output.jsonl --token TOKEN
"""
from __future__ import annotations

import argparse
import itertools

import orjson
from aiohttp import web


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8120)
    ap.add_argument("--file", required=True)
    ap.add_argument("--token", required=True)
    args = ap.parse_args()
    with open(args.file, "rb") as f:
        total = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))

    async def page(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {args.token}":
            return web.json_response({"message": "unauthorized"}, status=401)
        offset = int(request.query.get("offset", 0))
        limit = int(request.query.get("limit", 100))
        with open(args.file, "rb") as f:
            lines = list(itertools.islice(f, offset, offset + limit))
        body = b"[" + b",".join(line.rstrip(b"\n") for line in lines) + b"]"
        meta = orjson.dumps({"offset": offset, "limit": limit, "has_more": offset + len(lines) < total,
                             "status": "complete", "lines": total})
        return web.Response(body=b'{"output":' + body + b"," + meta[1:], content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/repo/{repo}/targets/{target}/stim/output", page)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
