"""The run journal: answers survive a reload, a torn last line is ignored, and any byte prefix of
a journal loads exactly the entries that were fully written."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.journal import Journal
from engine.types import Completion


def answer(text: str, model: str = "m") -> Completion:
    return Completion(text=text, model=model, prompt_tokens=12, completion_tokens=len(text.split()), finish_reason="stop")


def test_record_and_reload(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.record_ok("r1", "m", answer("first answer"))
        journal.record_ok("r2", "m", answer("second answer \u00e9\u4e2d"))
        journal.record_failed("r3", "m", "timeout")
        assert journal.completed("r1", "m") == answer("first answer")
    reloaded = Journal(path)
    try:
        assert reloaded.completed("r1", "m") == answer("first answer")
        assert reloaded.completed("r2", "m") == answer("second answer \u00e9\u4e2d")
        assert reloaded.completed("r3", "m") is None  # failed requests are retried
        assert reloaded.completed("r1", "other-model") is None  # keyed by model too
        assert reloaded.completed_count == 2
    finally:
        reloaded.close()
    assert [json.loads(line)["status"] for line in path.read_text(encoding="utf-8").splitlines()] == ["ok", "ok", "failed"]


def test_torn_last_line_is_ignored_and_the_next_append_starts_a_new_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.record_ok("r1", "m", answer("kept"))
        journal.record_ok("r2", "m", answer("torn"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 15])  # crash in the middle of the second line
    with Journal(path) as journal:
        assert journal.completed("r1", "m") == answer("kept")
        assert journal.completed("r2", "m") is None
        journal.record_ok("r3", "m", answer("after the crash"))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert json.loads(lines[2])["request_id"] == "r3"  # not glued to the torn line
    with Journal(path) as journal:
        assert journal.completed("r3", "m") == answer("after the crash")
        assert journal.completed_count == 2


def test_failed_then_ok_means_ok_and_ok_is_never_undone_by_a_later_failure(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.record_failed("r1", "m", "503")
        journal.record_ok("r1", "m", answer("second try"))
        journal.record_ok("r2", "m", answer("done"))
        journal.record_failed("r2", "m", "late failure")
    with Journal(path) as journal:
        assert journal.completed("r1", "m") == answer("second try")
        assert journal.completed("r2", "m") == answer("done")


def test_foreign_and_malformed_lines_are_skipped(tmp_path):
    path = tmp_path / "journal.jsonl"
    good = {"request_id": "r1", "model": "m", "status": "ok", "completion": {"text": "x", "model": "m"}}
    path.write_text("\n".join([
        "not json at all",
        json.dumps([1, 2]),
        json.dumps({"request_id": "r9", "model": "m", "status": "maybe"}),
        json.dumps({"request_id": 5, "model": "m", "status": "ok", "completion": {"text": "x", "model": "m"}}),
        json.dumps({"request_id": "r8", "model": "m", "status": "ok", "completion": "not a dict"}),
        json.dumps(good),
    ]) + "\n", encoding="utf-8")
    with Journal(path) as journal:
        assert journal.completed_count == 1
        assert journal.completed("r1", "m") == Completion(text="x", model="m")


def test_an_empty_file_and_a_missing_file_load_as_empty(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    for name in ("empty.jsonl", "missing.jsonl"):
        with Journal(tmp_path / name) as journal:
            assert journal.completed_count == 0
    assert (tmp_path / "missing.jsonl").exists()


ENTRY = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),  # request id: few values, so ids repeat
    st.sampled_from(["m1", "m2"]),
    st.sampled_from(["ok", "failed"]),
    st.text(max_size=30),  # answer text or error, any Unicode (the journal writes it unescaped)
)


def _expected(entries) -> dict[tuple[str, str], Completion]:
    done: dict[tuple[str, str], Completion] = {}
    for rid, model, status, text in entries:
        if status == "ok":
            done[(rid, model)] = answer(text, model)
    return done


def _draw_cut(data, line_ends: list[int], size: int) -> int:
    """A truncation point, biased to the edges of lines (the timestamps make line lengths vary, so
    the draws must not depend on them)."""
    if not line_ends:
        return 0
    line = data.draw(st.integers(0, len(line_ends) - 1), label="line")
    start = line_ends[line - 1] + 1 if line else 0
    where = data.draw(st.sampled_from(["start", "inside", "before_newline", "after_newline", "whole_file"]), label="where")
    if where == "inside":
        return start + data.draw(st.integers(0, 1000), label="per_mille") * (line_ends[line] - start) // 1000
    return {"start": start, "before_newline": line_ends[line], "after_newline": line_ends[line] + 1,
            "whole_file": size}[where]


@settings(max_examples=150, deadline=None)
@given(entries=st.lists(ENTRY, max_size=12), data=st.data())
def test_any_prefix_of_a_journal_loads_exactly_the_fully_written_entries(entries, data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "journal.jsonl"
        with Journal(path, fsync_every=1000) as journal:
            for rid, model, status, text in entries:
                if status == "ok":
                    journal.record_ok(rid, model, answer(text, model))
                else:
                    journal.record_failed(rid, model, text)
        content = path.read_bytes()
        assert content.count(b"\n") == len(entries)  # one line per entry: no newline inside an entry
        line_ends, offset = [], 0
        for line in content.split(b"\n")[: len(entries)]:
            offset += len(line)
            line_ends.append(offset)  # the entry's JSON ends here (its newline follows)
            offset += 1
        cut = _draw_cut(data, line_ends, len(content))
        path.write_bytes(content[:cut])
        complete = [entry for entry, end in zip(entries, line_ends) if end <= cut]
        expected = _expected(complete)

        with Journal(path) as journal:
            for rid in "abcd":
                for model in ("m1", "m2"):
                    assert journal.completed(rid, model) == expected.get((rid, model))
            assert journal.completed_count == len(expected)
            journal.record_ok("z", "m1", answer("appended after the cut", "m1"))

        with Journal(path) as journal:  # appending after any cut keeps every earlier entry readable
            assert journal.completed("z", "m1") == answer("appended after the cut", "m1")
            assert journal.completed_count == len(expected) + 1
