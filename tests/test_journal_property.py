"""Property tests of the run journal against crashes, over any mix of ok and failed records with
any request ids, models and texts (newlines, NUL, line separators, emoji, lone surrogates):

(a) any byte prefix of a written journal loads without error;
(b) every record whose line is complete in the prefix is recovered exactly, and nothing else;
(c) after loading a torn prefix and appending more, again and again, nothing acknowledged is lost
    and the new records load;
and the fsync batching never leaves `fsync_every` or more lines unsynced.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.journal import Journal
from engine.types import Completion

# Any code point, plus the characters most likely to break a line-oriented format.
CHAR = st.one_of(
    st.characters(),
    st.characters(categories=["Cs"]),  # a lone surrogate: what a model cut off mid-emoji returns
    st.sampled_from(["\n", "\r", "\x00", "\u2028", "\u0085", '"', "\\", "}", "\U0001f600", "é"]),
)
TEXT = st.text(CHAR, max_size=30)
REQUEST_ID = st.one_of(st.sampled_from(["r1", "r2", "r3"]), TEXT)  # few common ids, so ids repeat
MODEL = st.one_of(st.sampled_from(["m", "qwen2.5"]), st.text(CHAR, min_size=1, max_size=8))

COMPLETION = st.builds(Completion, text=TEXT, model=MODEL, prompt_tokens=st.integers(0, 10**6),
                       completion_tokens=st.integers(0, 10**4), finish_reason=st.sampled_from(["stop", "length"]))
# (request id, model, outcome): a Completion is an ok record, a str the error of a failed one
RECORD = st.tuples(REQUEST_ID, MODEL, st.one_of(COMPLETION, TEXT))
RECORDS = st.lists(RECORD, max_size=8)
EXAMPLES = settings(max_examples=60, deadline=None)


def write(journal: Journal, records) -> None:
    for request_id, model, outcome in records:
        if isinstance(outcome, Completion):
            journal.record_ok(request_id, model, outcome)
        else:
            journal.record_failed(request_id, model, outcome)


def expected(records) -> dict[tuple[str, str], Completion]:
    """What a journal of these records must answer: the last ok per key; a failure undoes nothing."""
    done = {}
    for request_id, model, outcome in records:
        if isinstance(outcome, Completion):
            done[(request_id, model)] = outcome
    return done


def assert_loads(path: Path, records) -> None:
    """The journal at `path` answers exactly as `expected(records)` says, for every key seen."""
    want = expected(records)
    with Journal(path) as journal:
        for request_id, model, _ in records:
            assert journal.completed(request_id, model) == want.get((request_id, model))
        assert journal.completed_count == len(want)


def line_ends(content: bytes, count: int) -> list[int]:
    """Offsets where each record's JSON ends (its newline follows); one line per record."""
    assert content.count(b"\n") == count  # no newline inside a record, however odd its text
    ends, offset = [], 0
    for line in content.split(b"\n")[:count]:
        offset += len(line)
        ends.append(offset)
        offset += 1
    return ends


def cut_points(data, ends: list[int], size: int) -> list[int]:
    """A few prefixes worth trying: anywhere, and on either side of a line's end. (Lines carry a
    timestamp, so their lengths vary from run to run: the draws must not depend on them.)"""
    cuts = [data.draw(st.integers(0, 1000), label="anywhere, per mille") * size // 1000]
    if ends:
        end = ends[data.draw(st.integers(0, len(ends) - 1), label="line")]
        cuts += [end - 1, end, end + 1]
    return sorted({min(max(cut, 0), size) for cut in cuts})


@EXAMPLES
@given(records=RECORDS, data=st.data())
def test_any_byte_prefix_loads_and_recovers_exactly_the_complete_lines(records, data):
    with tempfile.TemporaryDirectory() as folder:
        whole = Path(folder) / "whole.jsonl"
        with Journal(whole, fsync_every=1000) as journal:
            write(journal, records)
        content = whole.read_bytes()
        ends = line_ends(content, len(records))
        for cut in cut_points(data, ends, len(content)):
            prefix = Path(folder) / f"prefix-{cut}.jsonl"
            prefix.write_bytes(content[:cut])
            # a record whose JSON is whole loads even without its newline; a torn one never does
            assert_loads(prefix, [record for record, end in zip(records, ends) if end <= cut])


@EXAMPLES
@given(sessions=st.lists(st.tuples(RECORDS, st.floats(0, 1)), min_size=1, max_size=4))
def test_appending_after_torn_prefixes_keeps_everything_acknowledged(sessions):
    """Each session loads the journal, appends, and then loses a random part of what it appended
    (a power loss tears the unsynced tail); the next session must still see everything before."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "journal.jsonl"
        kept: list = []  # every record that survived its session's crash, in order
        for records, torn_share in sessions:
            assert_loads(path, kept)
            start = path.stat().st_size if path.exists() else 0
            with Journal(path, fsync_every=1000) as journal:
                write(journal, records)
            content = path.read_bytes()
            appended = content[start:]
            if appended.startswith(b"\n"):  # the newline that closes the previous session's torn line
                start, appended = start + 1, appended[1:]
            cut = start + int(len(appended) * torn_share)
            path.write_bytes(content[:cut])
            kept += [record for record, end in zip(records, line_ends(appended, len(records))) if start + end <= cut]
        assert_loads(path, kept)
        with Journal(path) as journal:  # and the last torn tail still takes new records
            journal.record_ok("after", "m", Completion(text="new", model="m"))
        assert_loads(path, [*kept, ("after", "m", Completion(text="new", model="m"))])


@EXAMPLES
@given(records=st.lists(RECORD, min_size=1, max_size=24), fsync_every=st.integers(1, 8))
def test_never_fsync_every_lines_unsynced_and_none_after_close(records, fsync_every):
    with tempfile.TemporaryDirectory() as folder:
        journal = Journal(Path(folder) / "journal.jsonl", fsync_every=fsync_every, fsync_interval=3600)
        for count, record in enumerate(records, start=1):
            write(journal, [record])
            assert journal.unsynced == count % fsync_every
        journal.close()
        assert journal.unsynced == 0


def test_a_line_waiting_longer_than_the_interval_is_synced_with_the_next_append(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl", fsync_every=1000, fsync_interval=0.05)
    journal.record_ok("r1", "m", Completion(text="one", model="m"))
    assert journal.unsynced == 1
    time.sleep(0.06)
    journal.record_ok("r2", "m", Completion(text="two", model="m"))
    assert journal.unsynced == 0
    journal.sync()
    journal.close()
    every_line = Journal(tmp_path / "journal.jsonl", fsync_interval=0)
    every_line.record_failed("r3", "m", "503")
    assert every_line.unsynced == 0
    every_line.close()

