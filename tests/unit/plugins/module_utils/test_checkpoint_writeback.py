"""checkpoint/writeback.py on real files: the writeback of what grew while a writer fills a dump
directory, and every file and directory synced before the manifest."""

import os
import threading

from ansible_collections.strata.ops.plugins.module_utils.checkpoint import writeback

CHUNK = b"\x5a" * (1 << 20)


def test_the_files_a_writer_grows_are_advised_while_it_writes(tmp_path):
    wrote = threading.Event()
    pages = tmp_path / "pre-1" / "pages-1.img"
    pages.parent.mkdir()

    def criu_like_writer():
        with open(pages, "wb") as out:
            for _chunk in range(8):
                out.write(CHUNK)
                out.flush()
                wrote.wait(0.03)
        (tmp_path / "inventory.img").write_bytes(b"inv")

    with writeback.Writeback(str(tmp_path), interval=0.01) as running:
        writer = threading.Thread(target=criu_like_writer)
        writer.start()
        writer.join()
        running.advise_grown()  # the last pass, as the next tick would make it
    assert running.advised[str(pages)] >= 2  # again as it grew, not once
    assert running.advised[str(tmp_path / "inventory.img")] == 1
    assert pages.read_bytes() == CHUNK * 8  # advice only: the bytes are the writer's


def test_an_unchanged_file_is_not_advised_again(tmp_path):
    (tmp_path / "core-1.img").write_bytes(b"core")
    running = writeback.Writeback(str(tmp_path))
    running.advise_grown()
    running.advise_grown()
    assert running.advised == {str(tmp_path / "core-1.img"): 1}


def test_a_directory_removed_under_it_is_no_error(tmp_path):
    gone = tmp_path / "dump"
    gone.mkdir()
    (gone / "pages-1.img").write_bytes(CHUNK)
    running = writeback.Writeback(str(gone))
    os.unlink(gone / "pages-1.img")
    gone.rmdir()
    running.advise_grown()
    assert running.advised == {}
    assert writeback.advise(str(gone / "pages-1.img")) is False


def test_make_durable_syncs_every_file_then_the_directories_root_last(tmp_path):
    (tmp_path / "pre-1").mkdir()
    (tmp_path / "pre-1" / "pages-1.img").write_bytes(CHUNK)
    (tmp_path / "pages-1.img").write_bytes(CHUNK)
    (tmp_path / "dump.log").write_text("log")
    os.symlink("pages-1.img", tmp_path / "link")  # not followed, not synced
    seconds, synced = writeback.make_durable(str(tmp_path))
    files = {str(tmp_path / name) for name in ("pre-1/pages-1.img", "pages-1.img", "dump.log")}
    assert set(synced[:3]) == files
    assert synced[3:] == [str(tmp_path / "pre-1"), str(tmp_path)]
    assert seconds >= 0
