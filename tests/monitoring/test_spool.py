"""The on-disk spool: sealing, ordering, orphans of dead writers, the byte budget, disk errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from konan.monitoring.spool import (
    DEAD_DIR,
    OPEN_SUFFIX,
    SEALED_SUFFIX,
    SpoolFull,
    SpoolLimits,
    SpoolReader,
    SpoolWriter,
)


def lines(*numbers: int) -> list[bytes]:
    return [b'{"n": %d}' % n for n in numbers]


def files(directory: Path, suffix: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(suffix))


def test_reader_sees_only_sealed_segments_oldest_first(spool_dir: Path) -> None:
    writer = SpoolWriter(spool_dir, SpoolLimits(max_segment_records=3, max_segment_age=3600))
    reader = SpoolReader(spool_dir)
    try:
        writer.append(lines(1, 2))
        assert reader.read(100) == []  # still open: a reader never sees a half-written segment
        writer.append(lines(3, 4, 5))  # reaches 3 records: sealed
        writer.append(lines(6))

        segments = reader.read(100)
        assert [s.lines for s in segments] == [lines(1, 2, 3, 4, 5)]
        assert len(files(spool_dir, OPEN_SUFFIX)) == 1

        writer.close()  # seals the rest
        segments = reader.read(100)
        assert [line for s in segments for line in s.lines] == lines(1, 2, 3, 4, 5, 6)
        assert files(spool_dir, OPEN_SUFFIX) == []
    finally:
        writer.close()
        reader.close()


def test_an_old_segment_is_sealed_on_tick(spool_dir: Path) -> None:
    writer = SpoolWriter(spool_dir, SpoolLimits(max_segment_age=0.0))
    reader = SpoolReader(spool_dir)
    try:
        writer.append(lines(1))
        assert reader.read(10) == []
        writer.tick()
        assert [s.lines for s in reader.read(10)] == [lines(1)]
    finally:
        writer.close()
        reader.close()


def test_deleted_segments_are_not_read_again_and_backlog_counts_records(spool_dir: Path) -> None:
    writer = SpoolWriter(spool_dir, SpoolLimits(max_segment_records=2))
    reader = SpoolReader(spool_dir)
    try:
        writer.append(lines(1, 2))
        writer.append(lines(3, 4))
        assert reader.backlog_records() == 4

        first = reader.read(2)
        assert [s.lines for s in first] == [lines(1, 2)]
        reader.delete([s.name for s in first])
        assert reader.backlog_records() == 2
        assert [s.lines for s in reader.read(2)] == [lines(3, 4)]
    finally:
        writer.close()
        reader.close()


def test_a_second_reader_stands_by_until_the_first_closes(spool_dir: Path) -> None:
    with_records = SpoolWriter(spool_dir, SpoolLimits(max_segment_records=1))
    with_records.append(lines(1))
    with_records.close()
    first, second = SpoolReader(spool_dir), SpoolReader(spool_dir)
    try:
        assert len(first.read(10)) == 1
        assert second.read(10) == []
        first.close()
        assert len(second.read(10)) == 1
    finally:
        first.close()
        second.close()


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_segment_left_open_by_a_killed_writer_is_recovered(spool_dir: Path) -> None:
    # The writer process dies with SIGKILL mid-segment, leaving a torn last line.
    done = _run(
        f"""
        import os, signal
        from pathlib import Path
        from konan.monitoring.spool import SpoolWriter, SpoolLimits
        w = SpoolWriter(Path({str(spool_dir)!r}), SpoolLimits(max_segment_age=3600))
        w.append([b'{{"n": 1}}', b'{{"n": 2}}'])
        os.write(w._fd, b'{{"n": 3, "tor')
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert done.returncode == -9, done.stderr
    assert len(files(spool_dir, OPEN_SUFFIX)) == 1

    reader = SpoolReader(spool_dir)
    try:
        segments = reader.read(10)
    finally:
        reader.close()
    assert [s.lines for s in segments] == [[b'{"n": 1}', b'{"n": 2}', b'{"n": 3, "tor']]
    assert files(spool_dir, OPEN_SUFFIX) == []
    assert len(files(spool_dir, SEALED_SUFFIX)) == 1


def test_the_open_segment_of_a_live_writer_is_left_alone(spool_dir: Path) -> None:
    writer = SpoolWriter(spool_dir, SpoolLimits(max_segment_age=3600))
    reader = SpoolReader(spool_dir)
    try:
        writer.append(lines(1))
        assert reader.recover_orphans() == 0
        assert reader.read(10) == []
        writer.append(lines(2))  # still its own segment
        writer.close()
        assert [line for s in reader.read(10) for line in s.lines] == lines(1, 2)
    finally:
        writer.close()
        reader.close()


def test_the_spool_refuses_records_over_its_byte_budget_until_space_is_freed(
    spool_dir: Path,
) -> None:
    writer = SpoolWriter(spool_dir, SpoolLimits(max_segment_records=10, max_total_bytes=100))
    reader = SpoolReader(spool_dir)
    try:
        writer.append(lines(*range(10)))  # 10 x 9 bytes: sealed
        with pytest.raises(SpoolFull):
            writer.append(lines(10, 11))
        reader.delete([s.name for s in reader.read(100)])
        writer.append(lines(10, 11))
        writer.close()
        assert [line for s in reader.read(100) for line in s.lines] == lines(10, 11)
    finally:
        writer.close()
        reader.close()


def test_a_failed_write_leaves_only_whole_records(spool_dir: Path) -> None:
    # A file-size limit makes the kernel refuse the write part-way, like a full disk does.
    done = _run(
        f"""
        import resource, signal
        from pathlib import Path
        from konan.monitoring.spool import SpoolWriter, SpoolLimits, SpoolUnavailable
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        w = SpoolWriter(Path({str(spool_dir)!r}), SpoolLimits(max_segment_age=3600))
        w.append([b'{{"n": 1}}'])
        resource.setrlimit(resource.RLIMIT_FSIZE, (40, 40))
        try:
            w.append([b'{{"n": %d}}' % n for n in range(2, 10)])
        except SpoolUnavailable as exc:
            print("refused:", exc)
        w.close()
        """
    )
    assert done.returncode == 0, done.stderr
    assert "refused" in done.stdout
    reader = SpoolReader(spool_dir)
    try:
        assert [s.lines for s in reader.read(10)] == [[b'{"n": 1}']]
    finally:
        reader.close()


def test_dead_letters_are_kept_with_their_reason(spool_dir: Path) -> None:
    reader = SpoolReader(spool_dir)
    try:
        reader.dead_letter([("seg-1.n2.sealed", "seg-1.n2.sealed:2", b"\xffnot json", "corrupt")])
        assert list(reader.dead_letters(10)) == [
            {"id": "seg-1.n2.sealed:2", "reason": "corrupt", "payload": "\\xffnot json"}
        ]
        assert files(spool_dir / DEAD_DIR, ".jsonl") == ["seg-1.jsonl"]
    finally:
        reader.close()
