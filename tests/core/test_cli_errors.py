"""Clean errors instead of tracebacks (issue 15 item 8).

A read-only output directory, ``--overwrite`` on a read-only index, an approximate build on a
read-only index, and a non-UTF-8 byte in any metadata JSON of an index each give one ``error:``
line naming the file and the problem, exit code 2; a failed ``index`` leaves no partially written
index behind (it used to leave a directory holding only ``.lock``).

Running as root, file permissions stop nothing, so a read-only filesystem is simulated by making
the OS-level calls that write under a directory fail with ``EROFS`` (what a read-only mount
raises), and, where this machine allows it, also checked on a real read-only bind mount.
"""

import builtins
import errno
import io
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from sparsearch.index import manifest as manifest_mod
from tests.core.test_cli import cli, snapshot

WRITE_MODES = set("wax+")


def read_only(monkeypatch, root: Path) -> None:
    """Make every write below ``root`` fail as on a read-only mount (EROFS), whoever runs the test."""
    root = Path(root).absolute()

    def under(p) -> bool:
        try:
            return Path(os.fsdecode(p)).absolute().is_relative_to(root)
        except TypeError:  # a file descriptor
            return False

    def refuse(p):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(p))

    real_open, real_os_open = builtins.open, os.open

    def fake_open(file, mode="r", *a, **kw):
        if set(mode) & WRITE_MODES and under(file):
            refuse(file)
        return real_open(file, mode, *a, **kw)

    def fake_os_open(path, flags, *a, **kw):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path):
            refuse(path)
        return real_os_open(path, flags, *a, **kw)

    def guard(fn):
        def wrapped(p, *a, **kw):
            if under(p):
                refuse(p)
            return fn(p, *a, **kw)
        return wrapped

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    for name in ("mkdir", "replace", "rename", "unlink", "remove", "rmdir"):
        monkeypatch.setattr(os, name, guard(getattr(os, name)))


def one_line_error(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    lines = r.stderr.replace("\r", "\n").strip().splitlines()  # (a progress bar may come first)
    assert lines[-1].startswith("error: ") and sum(x.startswith("error") for x in lines) == 1, r.stderr
    assert "Traceback" not in r.output
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


@pytest.fixture
def built(tiny_beir, tmp_path) -> Path:
    out = tmp_path / "ro" / "idx"
    r = cli("index", tiny_beir, "-o", out)
    assert r.exit_code == 0, r.output
    return out


def test_read_only_output_directory(tiny_beir, tmp_path, monkeypatch):
    """issue 15 item 8: a read-only output directory (was: raw OSError traceback)."""
    (tmp_path / "ro").mkdir()
    read_only(monkeypatch, tmp_path / "ro")
    r = cli("index", tiny_beir, "-o", tmp_path / "ro" / "new")
    one_line_error(r, str(tmp_path / "ro" / "new"), "cannot create the index directory", "Read-only file system")
    monkeypatch.undo()
    assert list((tmp_path / "ro").iterdir()) == []


def test_overwrite_and_approximate_build_on_a_read_only_index(tiny_beir, built, monkeypatch):
    """issue 15 item 8: `index --overwrite` and `build-approx` on a read-only index (was: OSError traceback);
    the index is untouched and still searchable."""
    before = snapshot(built)
    read_only(monkeypatch, built)
    one_line_error(cli("index", tiny_beir, "-o", built, "--overwrite"), str(built / ".lock"), "Read-only file system")
    one_line_error(cli("build-approx", built), str(built / ".lock"), "cannot lock the index for writing")
    one_line_error(cli("index", tiny_beir, "-o", built, "--overwrite", "--approximate"), "Read-only")
    r = cli("search", built, "-q", "domesticated cats")  # reading needs no write
    assert r.exit_code == 0 and "1. d1" in r.output, r.output
    monkeypatch.undo()
    assert snapshot(built) == before


def test_update_commands_on_a_read_only_index(tmp_path, built, monkeypatch):
    """issue 15 items 8 and 10: add/delete/merge on a read-only index: one line, exit 2, nothing changed."""
    (tmp_path / "more.txt").write_text("more cats\n")
    before = snapshot(built)
    read_only(monkeypatch, built)
    one_line_error(cli("add", built, tmp_path / "more.txt"), "Read-only file system")
    one_line_error(cli("delete", built, "d1"), "Read-only file system")
    one_line_error(cli("merge", built), "Read-only file system")
    monkeypatch.undo()
    assert snapshot(built) == before


def _can_bind_mount(path: Path) -> bool:
    if os.geteuid() != 0:
        return False
    p = subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)], capture_output=True)
    return p.returncode == 0


def test_real_read_only_mount(tiny_beir, built, tmp_path):
    """issue 15 item 8 on a real read-only bind mount (skipped where this process may not mount)."""
    ro = built.parent
    if not _can_bind_mount(ro):
        pytest.skip("cannot bind-mount read-only here (needs root with CAP_SYS_ADMIN)")
    try:
        with pytest.raises(OSError):
            (ro / f"probe-{uuid.uuid4().hex}").write_text("x")
        one_line_error(cli("index", tiny_beir, "-o", ro / "new"), "Read-only file system")
        one_line_error(cli("index", tiny_beir, "-o", built, "--overwrite"), "Read-only file system")
        one_line_error(cli("build-approx", built), "Read-only file system")
        assert cli("search", built, "-q", "cats").exit_code == 0
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert not (ro / "new").exists()


@pytest.mark.parametrize("pick", ["manifest.json", "vocab-*.json", "seg-*/segment.json", "seg-*/doc_ids.json",
                                  "encoder-*/*.json"])
def test_non_utf8_byte_in_metadata_json(built, pick):
    """issue 15 item 8: a non-UTF-8 byte in any metadata JSON: `stats` and `search` give one line naming the
    file (the encoder's state folder for its files) instead of a bare codec error or a traceback."""
    (f,) = built.glob(pick)
    data = f.read_bytes()
    f.write_bytes(data[:3] + b"\xff" + data[4:])
    named = str(f.parent) if pick.startswith("encoder-") else str(f)
    for args in (("stats", built), ("search", built, "-q", "cats")):
        r = cli(*args)
        if r.exit_code == 0 and args[0] == "stats" and pick.startswith("encoder-"):
            continue  # stats does not read the encoder state
        one_line_error(r, named)
        assert "utf-8" in r.stderr.lower() or "corrupt" in r.stderr.lower() or "checksum" in r.stderr.lower()


def test_failed_index_leaves_nothing_behind(tmp_path):
    """issue 15 item 8: a failed `index` leaves no directory holding only `.lock` (the error comes while
    streaming a vector file, after the index directory was created and locked)."""
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "vector": {"x": 1}}\n{"id": "b", "vector": {"x": -2}}\n')
    one_line_error(cli("index", tmp_path / "bad.jsonl", "-o", tmp_path / "deep" / "er" / "idx"), "line 2")
    assert not (tmp_path / "deep").exists()
    (tmp_path / "empty").mkdir()  # an existing empty directory stays, and empty
    one_line_error(cli("index", tmp_path / "bad.jsonl", "-o", tmp_path / "empty"), "line 2")
    assert list((tmp_path / "empty").iterdir()) == []


def test_failed_overwrite_keeps_the_old_index_and_leaves_no_new_files(tiny_beir, built, monkeypatch):
    """issue 15 item 8: `--overwrite` failing after its new segment was published (here: the commit is
    interrupted) keeps the previous index as it was, without the orphaned new files."""
    before = snapshot(built)

    def broken_commit(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr("sparsearch.index.builder.commit", broken_commit)
    r = cli("index", tiny_beir, "-o", built, "--overwrite")
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    monkeypatch.undo()
    assert set(snapshot(built)) == set(before)
    assert cli("search", built, "-q", "cats").exit_code == 0
    assert manifest_mod.read_manifest(built)["segments"]
