"""Whole bz2 files decoded by 7-Zip (`7zz`) in a child process (bert_core/corpus/readers.py
`_SevenZipBz2`): the same bytes as the standard library, every stream of a concatenated file, the same
one-line errors as indexed_bzip2 (the other decoder, tests/bz2_decoders.py) for data cut short or
damaged, progress in compressed bytes, and no child process or thread left by an early close or a
killed reader. The 7-Zip cases skip where it is not installed."""

from __future__ import annotations

import bz2
import errno
import io
import os
import pathlib
import signal
import subprocess
import sys

import psutil
import pytest

from bert_core.children import alive
from bert_core.corpus import readers, units, wiki
from bert_core.errors import UserError
from bz2_decoders import bz2_decoder, path_without_seven_zip, seven_zip_or_skip  # noqa: F401  (fixture)
from conftest import ROOT, one_line_error, run_bert
from processes import still_running


def _read(path: pathlib.Path, block: int = 1 << 20) -> tuple[bytes, type]:
    """(the decompressed bytes, the raw reader's class); the compressed bytes counted are the file's."""
    out = []
    with readers.open_decompressed(str(path)) as (stream, counted):
        while chunk := stream.read(block):
            out.append(chunk)
        kind = type(stream.raw)
    assert counted.count == path.stat().st_size
    return b"".join(out), kind


def _seven_zip_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            and os.path.basename(p.exe()) in ("7zz", "7z")]


def test_the_excerpt_and_concatenated_streams_decode_as_the_standard_library(wiki_excerpt, tmp_path):
    seven_zip_or_skip()
    data = pathlib.Path(wiki_excerpt).read_bytes()
    xml = bz2.decompress(data)
    (tmp_path / "one.bz2").write_bytes(data)
    (tmp_path / "two.bz2").write_bytes(bz2.compress(xml[:1_000_000]) + bz2.compress(xml[1_000_000:]))  # pbzip2-like
    (tmp_path / "four.bz2").write_bytes(bz2.compress(xml[:10]) + bz2.compress(b"") + bz2.compress(xml[10:3_000_000])
                                        + bz2.compress(xml[3_000_000:], 1))  # an empty stream; two block sizes
    for name in ("one.bz2", "two.bz2", "four.bz2"):
        for block in (1 << 20, 999):
            assert _read(tmp_path / name, block) == (xml, readers._SevenZipBz2), (name, block)


def test_7z_is_used_when_7zz_is_not_there_and_indexed_bzip2_without_either(wiki_excerpt, tmp_path, monkeypatch):
    program = seven_zip_or_skip()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "7z").symlink_to(program)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert readers.seven_zip() == str(bin_dir / "7z")
    assert _read(pathlib.Path(wiki_excerpt))[1] is readers._SevenZipBz2
    monkeypatch.setenv("PATH", path_without_seven_zip(tmp_path / "none"))
    assert readers.seven_zip() is None
    assert _read(pathlib.Path(wiki_excerpt))[1] is readers._Bz2
    (bin_dir / "7z").unlink()
    (bin_dir / "7zz").write_bytes(b"\x00 not a program")  # found, but exec fails: indexed_bzip2 then
    (bin_dir / "7zz").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert readers.seven_zip() == str(bin_dir / "7zz")
    assert _read(pathlib.Path(wiki_excerpt))[1] is readers._Bz2


def _dump() -> bytes:
    page = ("<page><title>T{n}</title><ns>0</ns><id>{n}</id><revision><text>" + "Some text here. " * 200
            + "</text></revision></page>\n")
    return ("<mediawiki>\n" + "".join(page.format(n=n) for n in range(300)) + "</mediawiki>\n").encode()


# The same damage as tests/test_corpus_read.py's in-process test, here through `bert prepare-corpus`
# (1 worker, and 2 fed by the reader): the line differs between decoders only in the decoder's own words.
@pytest.mark.parametrize("damage, detail", [
    (lambda d: d[:len(d) // 2], {"*": "truncated: bz2 data ended before the end-of-stream marker was reached"}),
    (lambda d: d[:-1], {"*": "truncated: bz2 data ended before the end-of-stream marker was reached"}),
    (lambda d: d[:10] + bytes([d[10] ^ 1]) + d[11:],  # the first block's stored CRC
     {"7zz": "invalid bz2 data (CRC Failed)", "indexed_bzip2": "invalid bz2 data (Calculated CRC"}),
], ids=["half", "last-byte", "crc"])
def test_damaged_bz2_through_bert_is_one_line_on_both_decoders(tmp_path, bz2_decoder, request, damage, detail):
    decoder = request.node.callspec.params["bz2_decoder"]
    src = tmp_path / "bad.xml.bz2"
    src.write_bytes(damage(bz2.compress(_dump())))
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        line = one_line_error(run_bert("prepare-corpus", f"--input_file={src}", f"--output_dir={out}",
                                       "--num_shards=2", f"--num_workers={workers}", env=bz2_decoder))
        assert line.startswith(f"bert: error: {src}: the compressed data is truncated or corrupt: "
                               f"{detail.get(decoder, detail.get('*'))}"), line
        assert not list(out.glob("corpus-*")) and not (out / "corpus_report.json").exists()


def test_data_after_the_last_stream_is_an_error_not_a_silent_end(tmp_path):
    """7-Zip does not say where such data starts: it may be a stream with a damaged header, whose pages
    would be lost, so it is an error (indexed_bzip2 ignores some such tails and not others)."""
    seven_zip_or_skip()
    whole = bz2.compress(_dump())
    for tail in (b"BZh9" + b"x" * 40, bytes(100), whole[:5] + b"\x00" + whole[6:]):
        src = tmp_path / "tail.xml.bz2"
        src.write_bytes(whole + tail)
        with pytest.raises(UserError) as err:
            list(wiki.iter_dump(str(src)))
        assert str(err.value) == (f"{src}: the compressed data is truncated or corrupt: "
                                  f"invalid bz2 data (data after the end of its last stream)")


class _FailingFile(io.FileIO):
    """A file whose reads fail with EIO past `at` bytes (a disk or network error mid-file)."""
    at = 300_000

    def readinto(self, buffer):
        if self.tell() >= self.at:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return super().readinto(buffer)


def test_a_read_error_of_the_input_is_its_own_line(wiki_excerpt, monkeypatch, bz2_decoder):
    monkeypatch.setattr(readers.storage, "open_read", lambda path, mode="rb": _FailingFile(path, "r"))
    with pytest.raises(UserError) as err:
        list(wiki.iter_dump(wiki_excerpt))
    assert str(err.value) == f"{wiki_excerpt}: cannot read it: {os.strerror(errno.EIO)}"
    assert not _seven_zip_children()


def test_progress_counts_the_compressed_bytes(wiki_excerpt, brown_corpus, tmp_path, bz2_decoder):
    size = os.path.getsize(wiki_excerpt)
    seen: list[int] = []
    assert len(list(wiki.iter_dump(wiki_excerpt, progress=seen.append))) == 206
    assert seen == sorted(seen) and seen[-1] == size and len(seen) > 2
    text = tmp_path / "brown.txt.bz2"
    text.write_bytes(bz2.compress(pathlib.Path(brown_corpus).read_bytes()))
    blocks = list(units.blocks(str(text), "bert", 200_000))
    assert len(blocks) > 5 and sum(b.size for b in blocks) == text.stat().st_size
    assert b"".join(b.data for b in blocks) == pathlib.Path(brown_corpus).read_bytes()


def test_an_early_close_kills_and_reaps_the_child_and_ends_the_thread(wiki_excerpt, tmp_path):
    seven_zip_or_skip()
    dump = tmp_path / "x3.xml.bz2"  # 18 MB out, far more than a read and the pipe hold: 7zz is still at work
    dump.write_bytes(pathlib.Path(wiki_excerpt).read_bytes() * 3)
    wiki_excerpt = str(dump)
    with readers.open_decompressed(wiki_excerpt) as (stream, _):
        assert stream.read(1000).startswith(b"<mediawiki")
        raw = stream.raw
        assert isinstance(raw, readers._SevenZipBz2) and raw.proc.poll() is None  # blocked on a full pipe
    assert raw.proc.returncode == -signal.SIGKILL and not raw.feeder.is_alive() and not alive(raw.proc.pid)
    with pytest.raises(ChildProcessError):  # reaped: no zombie left
        os.waitpid(raw.proc.pid, os.WNOHANG)
    # The readers' own early ends: format detection (64 KB), a dump's generator closed after a page.
    assert readers.detect_format(wiki_excerpt) == "wiki"
    pages = wiki.iter_dump(wiki_excerpt)
    next(pages)
    assert _seven_zip_children()
    pages.close()
    assert not _seven_zip_children()


_READER = """
import sys, time
from bert_core.corpus import readers
with readers.open_decompressed(sys.argv[1]) as (stream, _):
    stream.read(1000)
    print(stream.raw.proc.pid, flush=True)
    time.sleep(60)
"""


def test_a_killed_reader_leaves_no_child(wiki_excerpt):
    seven_zip_or_skip()
    proc = subprocess.Popen([sys.executable, "-c", _READER, wiki_excerpt], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
        assert alive(child)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert still_running({child: "7zz"}, 5) == {}


def test_a_stream_in_memory_goes_to_7zip_only_where_that_pays(wiki_excerpt, monkeypatch):
    """readers.decompress_bz2 (a multistream dump's streams): 7-Zip from SEVEN_ZIP_MIN_BYTES, the standard
    library below it; the same bytes, and for data cut short or damaged the same errors as bz2."""
    program = seven_zip_or_skip()
    data = bz2.decompress(pathlib.Path(wiki_excerpt).read_bytes())
    big = bz2.compress(data)
    small = bz2.compress(data[:100_000])
    assert len(big) >= readers.SEVEN_ZIP_MIN_BYTES > len(small)
    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd[0]) or real_run(cmd, **kw))
    assert readers.decompress_bz2(big) == data and calls == [program]
    assert readers.decompress_bz2(small) == data[:100_000] and calls == [program]  # (not called again)
    with pytest.raises(EOFError, match="ended before the end-of-stream marker"):
        readers.decompress_bz2(big[:len(big) // 2])
    damaged = bytearray(big)
    damaged[len(big) // 2] ^= 0x40
    with pytest.raises(OSError, match="invalid bz2 data"):
        readers.decompress_bz2(bytes(damaged))
    with pytest.raises(OSError):
        bz2.decompress(bytes(damaged))  # (the standard library too: the same kind of error)


def test_a_multistream_dump_of_large_streams_gives_the_same_shards_with_and_without_7zip(wiki_excerpt, tmp_path):
    from test_prepare_corpus import prepare, write_multistream

    seven_zip_or_skip()
    (tmp_path / "in").mkdir()
    dump, _ = write_multistream(bz2.decompress(pathlib.Path(wiki_excerpt).read_bytes()).decode(), tmp_path / "in",
                                pages_per_stream=60)
    sizes = [b - a for a, b in wiki.stream_offsets(dump.replace("multistream.xml", "multistream-index.txt"), dump)]
    assert sum(s >= readers.SEVEN_ZIP_MIN_BYTES for s in sizes) >= 2  # some streams do go to 7-Zip
    outputs = []
    for name, env in (("with", None), ("without", {"PATH": path_without_seven_zip(tmp_path / "bin")})):
        prepare(f"--input_file={dump}", f"--output_dir={tmp_path / name}", "--num_shards=2", "--num_workers=1",
                env=env)
        outputs.append(sorted((p.name, p.read_bytes()) for p in (tmp_path / name).glob("corpus-*.txt")))
    assert outputs[0] == outputs[1] and len(outputs[0]) == 2
