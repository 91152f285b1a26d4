"""OutputWriter commits whole lines; read_page serves exactly the committed ones."""
from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from stimserver.store import output
from stimserver.store.locks import FileLock


def rec(i: int) -> dict:
    return {"stimulus_id": i, "question": f"Question number {i}, with ünïcode and \"quotes\"?"}


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    d = tmp_path / "stim"
    d.mkdir()
    return d


def writer_for(job_dir: Path) -> tuple[output.OutputWriter, FileLock]:
    lock = FileLock.acquire(output.lock_path(job_dir), blocking=False)
    assert lock is not None
    return output.OutputWriter.open(job_dir, lock), lock


def page(job_dir: Path, offset: int, limit: int, **kw) -> tuple[list, output.Page]:
    p = output.read_page(job_dir, offset, limit, **kw)
    return orjson.loads(p.body), p


def test_append_then_page_everywhere(job_dir):
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(i)) for i in range(250)])
    for offset, limit in [(0, 100), (100, 100), (200, 100), (249, 1), (0, 1000), (250, 10), (10_000, 5)]:
        items, p = page(job_dir, offset, limit)
        assert items == [rec(i) for i in range(offset, min(offset + limit, 250))]
        assert p.total == 250 and p.count == len(items)


def test_missing_output_is_an_empty_page(job_dir):
    items, p = page(job_dir, 0, 10)
    assert items == [] and p.total == 0


def test_writer_rejects_records_that_would_break_lines(job_dir):
    w, lock = writer_for(job_dir)
    with lock, w:
        for bad in (b'{"a":\n1}', b"[1]", b""):
            with pytest.raises(ValueError):
                w.append([bad])
        assert w.lines == 0
    with pytest.raises(TypeError):
        output.encode([1, 2])  # type: ignore[arg-type]  # the wrong type is the test


def test_writer_needs_its_own_lock(job_dir, tmp_path):
    other = FileLock.acquire(tmp_path / "other.lock", blocking=False)
    assert other is not None
    with other, pytest.raises(ValueError):
        output.OutputWriter.open(job_dir, other)


def test_uncommitted_data_of_a_live_writer_is_not_served(job_dir):
    """Data a live writer appended but has not indexed yet stays invisible."""
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(i)) for i in range(5)])
        with open(job_dir / output.DATA_NAME, "ab") as f:  # the writer is between its two appends
            f.write(output.encode(rec(5)) + b"\n" + b'{"torn')
        items, p = page(job_dir, 0, 100)
        assert p.total == 5 and items == [rec(i) for i in range(5)]
        assert not list(job_dir.glob("output.jsonl.corrupt-*"))  # nothing "repaired" under a live writer
    items, p = page(job_dir, 0, 100)  # the writer is gone: its torn tail is cut, its whole line kept
    assert p.total == 6 and items == [rec(i) for i in range(6)]


def test_reader_repairs_damage_when_no_writer_is_alive(job_dir):
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(i)) for i in range(40)])
    (job_dir / output.INDEX_NAME).write_bytes(b"\xff" * 77)  # garbage after a crash
    with open(job_dir / output.DATA_NAME, "ab") as f:
        f.write(b'{"torn":')
    items, p = page(job_dir, 30, 100)
    assert p.total == 40 and items == [rec(i) for i in range(30, 40)]
    assert list(job_dir.glob("output.jsonl.corrupt-*"))


def test_reader_rebuilds_a_missing_index(job_dir):
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(i)) for i in range(12)])
    (job_dir / output.INDEX_NAME).unlink()
    items, p = page(job_dir, 10, 5)
    assert p.total == 12 and items == [rec(10), rec(11)]


def test_reopened_writer_continues_after_crash(job_dir):
    """Kill between the data append and the index append: the next writer keeps the lines."""
    w, lock = writer_for(job_dir)
    w.append([output.encode(rec(i)) for i in range(3)])
    with open(job_dir / output.DATA_NAME, "ab") as f:
        f.write(output.encode(rec(3)) + b"\n")
    w.close()
    lock.release()
    w2, lock2 = writer_for(job_dir)
    with lock2, w2:
        assert w2.lines == 4
        w2.append([output.encode(rec(4))])
    items, _ = page(job_dir, 0, 10)
    assert items == [rec(i) for i in range(5)]


def test_large_pages_are_left_to_the_caller(job_dir):
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(i)) for i in range(100)])
    p = output.read_page(job_dir, 10, 50, max_inline=100)
    assert p.body is None and p.count == 50
    begin, end = p.span
    raw = (job_dir / output.DATA_NAME).read_bytes()[begin:end]
    assert orjson.loads(output.splice(raw)) == [rec(i) for i in range(10, 60)]


def test_line_count(job_dir):
    assert output.line_count(job_dir) == 0
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(i)) for i in range(7)])
        assert output.line_count(job_dir) == 7


def test_a_page_reads_only_its_own_bytes(job_dir, monkeypatch):
    """O(limit): at most three 8-byte index reads (last entry, page start, page end), one data read."""
    w, lock = writer_for(job_dir)
    with lock, w:
        for start in range(0, 20_000, 5_000):
            w.append([output.encode(rec(i)) for i in range(start, start + 5_000)])
    reads: list[int] = []
    real_pread = os.pread

    def counting_pread(fd, n, off):
        reads.append(n)
        return real_pread(fd, n, off)

    monkeypatch.setattr(os, "pread", counting_pread)
    for offset in (0, 10_000, 19_900):
        reads.clear()
        p = output.read_page(job_dir, offset, 100)
        assert p.count == 100
        assert all(n == 8 for n in reads[:-1]) and len(reads) <= 4
        assert reads[-1] == p.span[1] - p.span[0]  # exactly the page's bytes


def test_served_lines_survive_crash_and_recovery_byte_for_byte(job_dir):
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(i)) for i in range(500)])
    served = [output.read_page(job_dir, off, 50).body for off in range(0, 500, 50)]
    # crash damage: a torn line after the data, and an index cut mid-entry with junk
    with open(job_dir / output.DATA_NAME, "ab") as f:
        f.write(b'{"stimulus_id": 500, "qu')
    idx = job_dir / output.INDEX_NAME
    idx.write_bytes(idx.read_bytes()[: 300 * 8 + 5])
    w2, lock2 = writer_for(job_dir)  # a new writer opens (and recovers) the output
    with lock2, w2:
        assert w2.lines == 500
    assert [output.read_page(job_dir, off, 50).body for off in range(0, 500, 50)] == served


def test_reading_a_removed_target_recreates_nothing(job_dir):
    """A page read racing a target delete must not bring the folders back."""
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(0))])
    (job_dir / output.INDEX_NAME).unlink()  # would need a repair...
    import shutil

    shutil.rmtree(job_dir.parent)  # ...but the target is gone
    assert output.read_page(job_dir, 0, 10).total == 0
    assert not job_dir.parent.exists()


def test_repair_can_be_left_to_the_caller(job_dir):
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(i)) for i in range(5)])
    (job_dir / output.INDEX_NAME).write_bytes(b"\x00" * 13)
    p = output.read_page(job_dir, 0, 10, repair=False)
    assert p.needs_repair and (job_dir / output.INDEX_NAME).stat().st_size == 13  # nothing touched
    items, p = page(job_dir, 0, 10)
    assert not p.needs_repair and items == [rec(i) for i in range(5)]


# -- read_page_async: the event loop's reader ------------------------------------------------

@pytest.fixture
def threads_used(monkeypatch):
    """What ``read_page_async`` sent to a worker thread: ('read', span) or ('repair', offset)."""
    import asyncio

    sent: list[tuple[str, object]] = []
    real_to_thread, real_read = asyncio.to_thread, output._read_off_loop

    async def to_thread(func, *args):
        sent.append((getattr(func, "__name__", ""), args[1]))
        return await real_to_thread(func, *args)

    async def read_off_loop(deferred):
        sent.append(("read", deferred.span))
        return await real_read(deferred)

    monkeypatch.setattr(output.asyncio, "to_thread", to_thread)
    monkeypatch.setattr(output, "_read_off_loop", read_off_loop)
    return sent


async def test_async_reader_reads_an_ordinary_page_inline(job_dir, threads_used):
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(i)) for i in range(300)])
    p = await output.read_page_async(job_dir, 10, 100)
    assert orjson.loads(p.body) == [rec(i) for i in range(10, 110)] and p.total == 300
    assert threads_used == []  # one pread on the loop, no thread hop


async def test_async_reader_sends_a_large_page_to_a_thread(job_dir, threads_used):
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(i)) for i in range(300)])
    p = await output.read_page_async(job_dir, 10, 100, max_inline=1000)
    assert orjson.loads(p.body) == [rec(i) for i in range(10, 110)] and p.count == 100 and p.total == 300
    assert threads_used == [("read", p.span)]  # exactly the page's bytes, read in the thread


async def test_async_reader_uses_the_module_threshold(job_dir, threads_used, monkeypatch):
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(i)) for i in range(30)])
    monkeypatch.setattr(output, "INLINE_READ_BYTES", 10)
    p = await output.read_page_async(job_dir, 0, 30)
    assert len(orjson.loads(p.body)) == 30 and [kind for kind, _ in threads_used] == ["read"]


async def test_async_reader_closes_the_data_file_after_a_thread_read(job_dir):
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(i)) for i in range(50)])
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        await output.read_page_async(job_dir, 0, 50, max_inline=1)
    assert len(os.listdir("/proc/self/fd")) <= before


async def test_async_reader_repairs_in_a_thread_and_only_when_needed(job_dir, threads_used):
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(i)) for i in range(5)])
    (job_dir / output.INDEX_NAME).write_bytes(b"\x00" * 13)  # damaged: needs a repair
    p = await output.read_page_async(job_dir, 0, 10)
    assert orjson.loads(p.body) == [rec(i) for i in range(5)] and not p.needs_repair
    assert threads_used == [("_locate", 0)]  # the repair (and its read) ran off the loop
    threads_used.clear()
    p = await output.read_page_async(job_dir, 2, 10)
    assert orjson.loads(p.body) == [rec(i) for i in range(2, 5)] and threads_used == []  # repaired for good


async def test_async_reader_leaves_a_live_writers_files_alone(job_dir, threads_used):
    w, lock = writer_for(job_dir)
    with lock, w:
        w.append([output.encode(rec(i)) for i in range(5)])
        with open(job_dir / output.DATA_NAME, "ab") as f:  # the writer between its two appends
            f.write(output.encode(rec(5)) + b"\n")
        p = await output.read_page_async(job_dir, 0, 10)
        assert orjson.loads(p.body) == [rec(i) for i in range(5)] and p.total == 5
        assert (job_dir / output.INDEX_NAME).stat().st_size == 5 * 8  # nothing rewritten under a writer
