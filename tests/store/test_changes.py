"""store.changes: the shared change word that lets cache hits skip their stat, and when it is trusted."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from stimserver.store import cache as cache_module
from stimserver.store import changes as changes_module
from stimserver.store.atomic import write_json_atomic
from stimserver.store.cache import FileCache
from stimserver.store.changes import BOARD_NAME, RECHECK_SECONDS, ChangeBoard, board_for, local_file_system, notice

ROOT = Path(__file__).resolve().parents[2]


def in_another_process(code: str) -> None:
    """Run ``code`` in a fresh interpreter (its own registry of boards, as a worker or the CLI has)."""
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, cwd=ROOT, timeout=60)


def test_a_bump_stores_a_new_word_that_another_process_sees(tmp_path):
    board = board_for(tmp_path)
    assert board.trusted and (tmp_path / BOARD_NAME).stat().st_size >= 8
    before = board.word()
    in_another_process(f"""
        from pathlib import Path
        from stimserver.store.changes import board_for
        board_for(Path({str(tmp_path)!r})).bump()
    """)
    after = board.word()
    assert after != before
    board.bump()
    assert board.word() not in (before, after)


def test_notice_bumps_only_the_data_directory_holding_the_path(tmp_path):
    a, b = board_for(tmp_path / "a"), board_for(tmp_path / "b")
    wa, wb = a.word(), b.word()  # None: the folders do not exist yet
    assert wa is None and wb is None
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    notice(tmp_path / "a" / "users" / "x")  # opens a's board late (made after the directory appeared)
    wa, wb = a.word(), b.word()
    notice(tmp_path / "ab" / "x")  # a sibling whose name starts the same is not inside a
    assert a.word() == wa
    notice(tmp_path / "b" / "job.json")
    assert a.word() == wa and b.word() != wb


def _mountinfo(tmp_path: Path, *mounts: tuple[str, str]) -> str:
    lines = [f"{i} 1 0:{i} / {point} rw,relatime - {fs} src rw" for i, (point, fs) in enumerate(mounts, 20)]
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize(("fs", "trusted"), [("ext4", True), ("xfs", True), ("tmpfs", True), ("overlay", True),
                                             ("fuse.glusterfs", False), ("nfs4", False), ("ceph", False),
                                             ("cifs", False), ("9p", False)])
def test_the_word_is_trusted_only_on_a_local_file_system(tmp_path, fs, trusted):
    info = _mountinfo(tmp_path, ("/", "ext4"), ("/srv/data", fs), ("/srv/data2", "nfs4"))
    assert local_file_system(Path("/srv/data/users"), info) is trusted  # the longest mount point decides
    assert local_file_system(Path("/srv/data"), info) is trusted
    assert local_file_system(Path("/srv/other"), info) is True
    assert local_file_system(Path("/srv/data2/x"), info) is False


def test_without_mountinfo_nothing_is_trusted(tmp_path):
    assert local_file_system(tmp_path, str(tmp_path / "missing")) is False


class CountingStat:
    def __init__(self, monkeypatch):
        self.calls = 0
        real = os.stat

        def stat(path, *args, **kwargs):
            self.calls += 1
            return real(path, *args, **kwargs)

        monkeypatch.setattr(cache_module.os, "stat", stat)


def test_a_hit_skips_the_stat_until_another_process_changes_the_file(tmp_path, monkeypatch):
    path = tmp_path / "users" / "job.json"
    write_json_atomic(path, {"n": 1})
    cache = FileCache(board=board_for(tmp_path))
    stats = CountingStat(monkeypatch)
    assert cache.read(path) == {"n": 1}
    first = stats.calls
    for _ in range(5):
        assert cache.read(path) == {"n": 1}
    assert stats.calls == first  # the board said nothing changed: no stat
    in_another_process(f"""
        from pathlib import Path
        from stimserver.store.paths import DataPaths
        from stimserver.store.atomic import write_json_atomic
        DataPaths(Path({str(tmp_path)!r}))
        write_json_atomic(Path({str(path)!r}), {{"n": 2}})
    """)
    assert cache.read(path) == {"n": 2}  # seen by the very next read


def test_a_change_made_by_hand_is_seen_within_the_recheck_bound(tmp_path, monkeypatch):
    path = tmp_path / "job.json"
    write_json_atomic(path, {"n": 1})
    cache = FileCache(board=board_for(tmp_path))
    clock = [1000.0]
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: clock[0])
    assert cache.read(path) == {"n": 1}
    tmp = tmp_path / "edit"
    tmp.write_bytes(orjson.dumps({"n": 2}))
    os.replace(tmp, path)  # not through the store: no word is stored
    clock[0] += RECHECK_SECONDS / 2
    assert cache.read(path) == {"n": 1}  # within the bound the hit may stand
    clock[0] += RECHECK_SECONDS
    assert cache.read(path) == {"n": 2}


def test_an_untrusted_board_means_a_stat_per_read(tmp_path, monkeypatch):
    path = tmp_path / "job.json"
    write_json_atomic(path, {"n": 1})
    board = ChangeBoard(tmp_path)
    board.trusted = False  # as on GlusterFS or NFS
    cache = FileCache(board=board)
    stats = CountingStat(monkeypatch)
    for _ in range(3):
        assert cache.read(path) == {"n": 1}
    assert stats.calls == 3


def test_on_a_network_file_system_no_board_is_made(tmp_path, monkeypatch):
    monkeypatch.setattr(changes_module, "local_file_system", lambda root: False)
    board = ChangeBoard(tmp_path)
    board.bump()
    assert not board.trusted and board.word() is None
    assert not (tmp_path / BOARD_NAME).exists()  # nothing written to the shared directory
