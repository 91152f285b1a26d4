"""A job's whole committed output in one response (issue 11), for any job kind.

    GET /v1/repo/{repo}/targets/{target}/{kind}/export[?format=raw|questions|sft]

The lines committed when the request starts are the answer (``X-Stimserver-Lines``; the
job's state in ``X-Stimserver-Job-Status``, its id in ``X-Stimserver-Job-Id``), so a
running job's export is a consistent prefix. ``raw`` is the stored bytes: a
``Content-Length`` answer sent with ``sendfile`` straight from the file's committed byte
range (chunked ``pread`` where the transport cannot sendfile), so memory does not grow
with the output. ``Range`` (one ``bytes=`` range) answers 206 or 416 on those bytes; an
output only ever grows within one job, so a resumed download joins up (check the job id).

Gzip (``Accept-Encoding: gzip``) is streamed chunked without ``Content-Length``. A
request with ``Range`` is answered without gzip, because ranges count the stored bytes:
resuming a download never depends on how a compressor cut its stream. The ``questions``
(stim) and ``sft`` (rollout) formats rewrite each line, so their length is not known in
advance: chunked, Range ignored (a 200 of the whole), gzip when asked.
"""
from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Iterator

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from ..api.errors import ApiError, ValidationError
from ..api.keys import PATHS
from ..store import formats, snapshot
from .context import target_context

__all__ = ["routes", "export", "parse_range", "RangeNotSatisfiable"]

routes = web.RouteTableDef()

NDJSON = "application/x-ndjson"
CHUNK = 1 << 20
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(ApiError):
    status, code = 416, "RANGE_NOT_SATISFIABLE"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[begin, end)`` of one ``bytes=`` range of ``size`` bytes; None: serve the whole (no, or
    an unreadable or multi-part, Range); RangeNotSatisfiable when it lies past the end."""
    if header is None:
        return None
    m = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if m is None or (not m[1] and not m[2]):
        return None  # RFC 9110: a Range it cannot parse is ignored
    if not m[1]:  # the last N bytes
        suffix = int(m[2])
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size
    begin = int(m[1])
    end = min(int(m[2]) + 1, size) if m[2] else size
    if m[2] and int(m[2]) < begin:
        return None  # an invalid range is ignored
    if begin >= size:
        raise _unsatisfiable(size)
    return begin, end


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(f"range not satisfiable: the output has {size} bytes",
                               headers={"Content-Range": f"bytes */{size}"})


def _wants_gzip(request: web.Request) -> bool:
    for part in request.headers.get("Accept-Encoding", "").lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() in ("gzip", "x-gzip"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _read(snap: snapshot.Snapshot, begin: int, end: int, convert: formats.Converter | None) -> Iterator[bytes]:
    chunks = snap.chunks(begin, end, CHUNK)
    return formats.convert_chunks(chunks, convert) if convert is not None else chunks


async def _sendfile(request: web.Request, resp: web.StreamResponse, writer: AbstractStreamWriter,
                    snap: snapshot.Snapshot, begin: int, end: int) -> None:
    """The bytes ``[begin, end)`` by the kernel's sendfile, else chunked reads."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost")
    with snap.file() as f:
        try:
            sent = await asyncio.get_running_loop().sendfile(transport, f, begin, end - begin)
            writer.output_size += sent  # past aiohttp's writer: counted here so the access log shows it
            return
        except NotImplementedError:
            pass
    await _gzip_or_plain(resp, _read(snap, begin, end, None), gzip=False)


async def export(request: web.Request, kind: str) -> web.StreamResponse:
    fmt = request.query.get("format", "raw")
    try:
        convert = formats.converter(fmt, kind)
    except ValueError as e:
        raise ValidationError(f"query parameter format {e}",
                              detail=[{"loc": ["query", "format"], "msg": str(e), "type": "value_error"}]) from None
    ctx, target, _ = target_context(request)
    job = ctx.records.job(ctx.user, ctx.repo, target, kind)
    job_dir = request.app[PATHS].job_dir(ctx.user, ctx.repo, target, kind)
    snap = await asyncio.to_thread(snapshot.take, job_dir) if job is not None else None
    if snap is None:
        snap = snapshot.Snapshot(-1, -1, 0, 0)
    try:
        headers = {
            "Content-Type": NDJSON,
            "Content-Disposition": f'attachment; filename="{ctx.repo}-{target}-{kind}'
                                   f'{"" if convert is None else "-" + fmt}.jsonl"',
            "X-Stimserver-Lines": str(snap.lines),
            "X-Stimserver-Job-Status": str(job.get("status", "failed")) if job is not None else "not_started",
            "Vary": "Accept-Encoding",
        }
        if job is not None and job.get("job_id") is not None:
            headers["X-Stimserver-Job-Id"] = str(job["job_id"])
        begin, end = 0, snap.size
        status = 200
        gzip = _wants_gzip(request)
        if convert is None:
            headers["Accept-Ranges"] = "bytes"
            span = parse_range(request.headers.get("Range"), snap.size)
            if span is not None:
                (begin, end), status, gzip = span, 206, False
                headers["Content-Range"] = f"bytes {begin}-{end - 1}/{snap.size}"
        if gzip:
            headers["Content-Encoding"] = "gzip"
        resp = web.StreamResponse(status=status, headers=headers)
        if convert is None and not gzip:
            resp.content_length = end - begin
        writer = await resp.prepare(request)
        assert writer is not None  # a fresh response always prepares
        if request.method == "HEAD" or snap.size == 0 and not gzip:
            await resp.write_eof()
            return resp
        try:
            if convert is None and not gzip:
                await _sendfile(request, resp, writer, snap, begin, end)
            else:
                await _gzip_or_plain(resp, _read(snap, begin, end, convert), gzip)
            await resp.write_eof()
        except ConnectionError:
            pass  # the client went away mid-download (it resumes with Range): nothing to answer
        return resp
    finally:
        if snap.data_fd >= 0:
            snap.close()


async def _gzip_or_plain(resp: web.StreamResponse, parts: Iterator[bytes], gzip: bool) -> None:
    """Write ``parts``, gzip-compressed when asked; reading, converting and compressing run in a thread."""
    zipper = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None
    done = False

    def step() -> bytes:
        nonlocal done
        for part in parts:
            out = zipper.compress(part) if zipper is not None else part
            if out:
                return out
        done = True
        return zipper.flush() if zipper is not None else b""

    while not done:
        out = await asyncio.to_thread(step)
        if out:
            await resp.write(out)


# One literal route per job kind.
@routes.get("/v1/repo/{repo_name}/targets/{target_name}/stim/export")
async def stim_export(request: web.Request) -> web.StreamResponse:
    return await export(request, "stim")


@routes.get("/v1/repo/{repo_name}/targets/{target_name}/rollout/export")
async def rollout_export(request: web.Request) -> web.StreamResponse:
    return await export(request, "rollout")
