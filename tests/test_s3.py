"""Indexes and run folders on object storage, against moto's S3 server on loopback (the dev extra):
build, add, open and search an s3:// index like a local one; synthesize into an s3:// run folder and
resume it from the bucket on a machine with no local copy; one-line errors that leave nothing half-written."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import urllib.request
import uuid

import pytest

from engine.embed import HashEmbedder
from engine.errors import ConfigError, IndexNotFound, LLMFatalError
from engine.index.builder import build_index
from engine.index.reader import Index, list_indexes
from engine.pipeline import SynthOptions, synthesize
from engine.remote import Remote, local_cache
from engine.testing import ScriptedLLM, default_answer

from conftest import CrashingLLM, S3_SECRET as SECRET, oil_earnings_task, s3_filesystem, write_reuters_slice

moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra: pip install -e '.[dev]'")

EMBEDDER = HashEmbedder(64)
QUERIES = ("crude oil prices OPEC", "quarterly net profit dividend", "wheat exports", "bank interest rates")
RUN_FILES = {"dataset.parquet", "dataset.jsonl", "rejected.jsonl", "manifest.json", "README.md", "run.json", "journal.jsonl"}


def require_auth(endpoint: str, count: str) -> None:
    """moto's server checks credentials (and IAM policies) once `count` requests passed; "inf" turns that off."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request, timeout=10).read()


@pytest.fixture
def read_only(bucket, endpoint, monkeypatch):
    """AWS_* credentials of an IAM user that may read the bucket but not write to it (checked by moto while this lasts)."""
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="seedbed-test-key",
                       aws_secret_access_key=SECRET)
    user = f"reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    policy = {"Version": "2012-10-17", "Statement": [{  # moto checks HEAD requests as s3:HeadBucket / s3:HeadObject
        "Effect": "Allow", "Action": ["s3:Get*", "s3:List*", "s3:Head*"],
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}
    iam.put_user_policy(UserName=user, PolicyName="read-only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    require_auth(endpoint, "0")
    yield key
    require_auth(endpoint, "inf")


def objects(uri: str) -> dict[str, int]:
    return Remote.connect(uri).list_files()


def top10(index: Index, mode: str) -> list[list[tuple[str, float]]]:
    return [[(hit.passage.id, round(hit.score, 6)) for hit in index.search(q, k=10, mode=mode)] for q in QUERIES]


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and SECRET not in message and "seedbed-test-key" not in message
    return message


# --- indexes --------------------------------------------------------------------------------------


def test_an_index_on_s3_searches_exactly_like_the_same_build_done_locally(bucket, tmp_path):
    corpus = write_reuters_slice(tmp_path / "reuters.jsonl", 60)
    root = f"s3://{bucket}/indexes"
    remote = build_index(corpus, "news", EMBEDDER, root=root)
    local = build_index(corpus, "news", EMBEDDER, root=tmp_path / "local")
    assert remote.manifest.corpus_fingerprint == local.manifest.corpus_fingerprint
    assert remote.manifest.passages == local.manifest.passages > 50

    pointer = json.loads(Remote.connect(root).read_bytes("news/manifest.json"))
    build_id = pointer["build"]["id"]
    listed = objects(root)
    assert {f"news/builds/{build_id}/{rel}": size for rel, size in pointer["build"]["files"].items()} == {
        rel: size for rel, size in listed.items() if rel != "news/manifest.json"}
    assert {"manifest.json", "dense.faiss"} <= set(pointer["build"]["files"])
    assert any(rel.startswith("store/passages.lance/") for rel in pointer["build"]["files"])
    assert "local cache" in pointer["build"]["read"]
    assert [m.name for m in list_indexes(root)] == ["news"]

    shutil.rmtree(tmp_path / "remote-cache")  # a machine that never saw this index: it is copied on open
    opened = Index.open("news", root, embedder=EMBEDDER)
    assert opened.folder.name == build_id and str(tmp_path / "remote-cache") in str(opened.folder)
    here = Index.open("news", tmp_path / "local", embedder=EMBEDDER)
    for mode in ("dense", "bm25", "hybrid"):
        assert top10(opened, mode) == top10(here, mode)
    assert opened.passages.equals(here.passages)


def test_add_and_force_publish_a_new_build_and_delete_the_previous_one(bucket, tmp_path):
    first = write_reuters_slice(tmp_path / "first.jsonl", 40)
    more = write_reuters_slice(tmp_path / "more.jsonl", 80, start=40)
    root = f"s3://{bucket}/idx"
    build_index(first, "news", EMBEDDER, root=root)
    old = json.loads(Remote.connect(root).read_bytes("news/manifest.json"))["build"]["id"]
    with pytest.raises(ConfigError, match="already exists at s3://.*use --add .* or --force"):
        build_index(first, "news", EMBEDDER, root=root)
    with pytest.raises(IndexNotFound, match="cannot --add to index 'other'"):
        build_index(first, "other", EMBEDDER, root=root, add=True)

    shutil.rmtree(tmp_path / "remote-cache")  # --add on a clean machine copies the current build first
    added = build_index(more, "news", EMBEDDER, root=root, add=True)
    build_index(first, "news", EMBEDDER, root=tmp_path / "local")
    local = build_index(more, "news", EMBEDDER, root=tmp_path / "local", add=True)
    assert added.manifest.corpus_fingerprint == local.manifest.corpus_fingerprint
    assert added.added == local.added > 0
    new = json.loads(Remote.connect(root).read_bytes("news/manifest.json"))["build"]["id"]
    assert new != old and {rel.split("/")[2] for rel in objects(root) if "/builds/" in rel} == {new}
    assert len(Index.open("news", root, embedder=EMBEDDER)) == local.manifest.passages

    rebuilt = build_index(first, "news", EMBEDDER, root=root, force=True)
    assert len(Index.open("news", root, embedder=EMBEDDER)) == rebuilt.manifest.passages < local.manifest.passages


def test_an_upload_cut_short_leaves_the_previous_index_in_place(bucket, tmp_path, monkeypatch):
    corpus = write_reuters_slice(tmp_path / "reuters.jsonl", 40)
    root = f"s3://{bucket}/idx"
    build_index(corpus, "news", EMBEDDER, root=root)
    before = objects(root)
    passages = len(Index.open("news", root, embedder=EMBEDDER))

    def upload_one_file_then_drop(self, local, rel=""):
        first = next(path for path in sorted(local.rglob("*")) if path.is_file())
        self.put_file(first, f"{rel}/{first.relative_to(local).as_posix()}".lstrip("/"))
        raise ConfigError("cannot reach the S3 endpoint (the connection dropped)")

    write_bytes = Remote.write_bytes

    def drop_the_pointer(self, rel, data):
        if rel == "manifest.json":
            raise ConfigError("cannot reach the S3 endpoint (the connection dropped)")
        write_bytes(self, rel, data)

    bigger = write_reuters_slice(tmp_path / "bigger.jsonl", 80)
    for method, cut in (("upload_folder", upload_one_file_then_drop), ("write_bytes", drop_the_pointer)):
        with monkeypatch.context() as patch:
            patch.setattr(Remote, method, cut)
            with pytest.raises(ConfigError, match="connection dropped"):
                build_index(bigger, "news", EMBEDDER, root=root, force=True)
            with pytest.raises(ConfigError, match="connection dropped"):
                build_index(bigger, "fresh", EMBEDDER, root=root)
        assert objects(root) == before, method  # the unpointed builds were removed; the pointer never moved
    shutil.rmtree(tmp_path / "remote-cache")
    assert len(Index.open("news", root, embedder=EMBEDDER)) == passages
    with pytest.raises(IndexNotFound, match="no index named 'fresh' .* existing: news"):
        Index.open("fresh", root, embedder=EMBEDDER)


def test_opening_an_index_keeps_cached_builds_newer_than_the_one_it_opens(bucket, tmp_path):
    """Another process may have just fetched a newer build into the same cache: only older copies are pruned."""
    build_index(write_reuters_slice(tmp_path / "reuters.jsonl", 40), "news", EMBEDDER, root=f"s3://{bucket}/idx")
    opened = Index.open("news", f"s3://{bucket}/idx", embedder=EMBEDDER).folder
    older, newer = opened.parent / "20000101T000000Z-00000000", opened.parent / "99991231T235959Z-ffffffff"
    for folder in (older, newer):
        folder.mkdir()
        (folder / "manifest.json").write_text("{}", encoding="utf-8")
    assert Index.open("news", f"s3://{bucket}/idx", embedder=EMBEDDER).folder == opened
    assert newer.is_dir() and not older.exists()


# --- storage --------------------------------------------------------------------------------------


class CutStream:
    """An output stream whose `fail_on`-th write fails as a dropped connection does (closing it still commits)."""

    def __init__(self, stream, fail_on: int):
        self.stream, self.fail_on, self.writes = stream, fail_on, 0

    def write(self, data):
        self.writes += 1
        if self.writes == self.fail_on:
            raise OSError("AWS Error NETWORK_CONNECTION during UploadPart operation: connection reset by peer")
        return self.stream.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.stream.__exit__(*exc)


class CutFilesystem:
    """A real S3 filesystem whose output streams are cut on their `fail_on`-th write."""

    def __init__(self, filesystem, fail_on: int):
        self.filesystem, self.fail_on, self.streams = filesystem, fail_on, []

    def open_output_stream(self, path):
        self.streams.append(CutStream(self.filesystem.open_output_stream(path), self.fail_on))
        return self.streams[-1]

    def __getattr__(self, name):
        return getattr(self.filesystem, name)


def test_an_upload_cut_inside_put_file_keeps_the_previous_object_and_leaves_no_temp(bucket, endpoint, tmp_path,
                                                                                   monkeypatch):
    import engine.remote

    remote = Remote.connect(f"s3://{bucket}/blobs")
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(b"old " * 64)
    new.write_bytes(b"new " * 64)
    remote.put_file(old, "data.bin")
    monkeypatch.setattr(engine.remote, "_CHUNK", 64)  # four chunks, the second one cut
    cut = CutFilesystem(s3_filesystem(endpoint), fail_on=2)
    with pytest.raises(ConfigError, match="cannot reach the S3 endpoint"):
        Remote(remote.uri, cut).put_file(new, "data.bin")
    assert [stream.writes for stream in cut.streams] == [2]  # one chunk went out before the cut
    assert remote.read_bytes("data.bin") == old.read_bytes()
    assert objects(remote.uri) == {"data.bin": 256}  # the partial temp object was deleted


def test_credentials_in_the_endpoint_url_are_refused_and_never_printed(bucket, monkeypatch):
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS secrets hold '/' (and '+')
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://AKIDEXAMPLE:{secret}@127.0.0.1:9")
    with pytest.raises(ConfigError) as exc:
        list_indexes(f"s3://{bucket}/indexes")
    assert str(exc.value) == ("AWS_ENDPOINT_URL holds credentials ('@'); put credentials in "
                              "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, not in AWS_ENDPOINT_URL")


def test_the_local_copy_of_a_uri_depends_on_the_endpoint(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    copies = []
    for endpoint in ("http://127.0.0.1:9000", "http://127.0.0.1:9001", None):
        if endpoint:
            monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        else:
            monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        copies.append(local_cache("s3://bucket/runs/x", "runs"))
    assert len(set(copies)) == 3 and len({copy.parent for copy in copies}) == 1


# --- run folders ----------------------------------------------------------------------------------


@pytest.fixture
def s3_index(bucket, tmp_path):
    corpus = write_reuters_slice(tmp_path / "reuters.jsonl", 60)
    root = f"s3://{bucket}/indexes"
    build_index(corpus, "news", EMBEDDER, root=root)
    task_file = tmp_path / "task.yaml"
    task_file.write_text(oil_earnings_task("s3-run", examples_per_label=3, seed=4, assign_labels=False), encoding="utf-8")
    from engine.config import load_task

    return Index.open("news", root, embedder=EMBEDDER), load_task(task_file)


def test_a_run_on_s3_uploads_its_files_and_resumes_from_the_bucket_on_a_clean_machine(s3_index, bucket, tmp_path,
                                                                                    monkeypatch):
    index, task = s3_index
    out = f"s3://{bucket}/runs/first"
    pushed = []
    put_file = Remote.put_file

    def recording_put_file(self, local, rel, limit=None):
        pushed.append(rel)
        put_file(self, local, rel, limit)

    with monkeypatch.context() as patch:
        patch.setattr(Remote, "put_file", recording_put_file)
        result = synthesize(task, index, ScriptedLLM(), SynthOptions(out=out, concurrency=2))
    local = synthesize(task, index, ScriptedLLM(), SynthOptions(out=tmp_path / "local", concurrency=2))
    assert result.out == out and result.files["manifest"] == f"{out}/manifest.json"
    assert set(objects(out)) == RUN_FILES
    remote = Remote.connect(out)
    assert remote.read_bytes("dataset.jsonl") == (tmp_path / "local" / "dataset.jsonl").read_bytes()
    manifest = json.loads(remote.read_bytes("manifest.json"))
    assert manifest["counts"]["llm_calls"] == result.calls == local.calls > 0
    assert pushed[-1] == "manifest.json"  # last, so a manifest in the bucket describes finished files
    assert pushed.count("journal.jsonl") == manifest["counts"]["rounds"] + 1  # after each round, and at the end
    assert set(pushed[:2]) == {"journal.jsonl", "run.json"}  # run.json with the first journal: --resume finds it
    assert not (local_cache(out, "runs") / "run").exists()  # published: the bucket is the record

    shutil.rmtree(tmp_path / "remote-cache")  # another machine: only the bucket knows this run
    llm = ScriptedLLM()
    again = synthesize(task, index, llm, SynthOptions(out=out, concurrency=2))
    assert llm.calls == [] and again.calls == 0 and again.reused == result.calls
    assert remote.read_bytes("dataset.jsonl") == (tmp_path / "local" / "dataset.jsonl").read_bytes()
    assert json.loads(remote.read_bytes("manifest.json"))["counts"]["reused_from_journal"] == result.calls


def test_a_run_that_fails_keeps_its_paid_answers_in_the_bucket_and_no_manifest(s3_index, bucket, tmp_path):
    index, task = s3_index
    whole_llm = ScriptedLLM()
    synthesize(task, index, whole_llm, SynthOptions(out=tmp_path / "whole", concurrency=1))
    out = f"s3://{bucket}/runs/crashed"
    with pytest.raises(LLMFatalError, match="went away"):
        synthesize(task, index, CrashingLLM(survive=3), SynthOptions(out=out, concurrency=1))
    assert set(objects(out)) == {"journal.jsonl", "run.json"}  # the answers paid for; no dataset, no manifest
    lines = Remote.connect(out).read_bytes("journal.jsonl").decode().splitlines()
    assert sum(json.loads(line)["status"] == "ok" for line in lines) == 3

    shutil.rmtree(tmp_path / "remote-cache")
    llm = ScriptedLLM()
    resumed = synthesize(task, index, llm, SynthOptions(out=out, concurrency=1))
    assert len(llm.calls) == len(whole_llm.calls) - 3 and resumed.reused == 3
    assert Remote.connect(out).read_bytes("dataset.jsonl") == (tmp_path / "whole" / "dataset.jsonl").read_bytes()


def test_journals_merge_when_this_machine_holds_answers_the_bucket_lacks(s3_index, bucket, tmp_path):
    """The bucket's journal and a local copy that never finished uploading are joined, not overwritten."""
    index, task = s3_index
    out = f"s3://{bucket}/runs/merge"
    synthesize(task, index, ScriptedLLM(), SynthOptions(out=out, concurrency=1))
    lines = Remote.connect(out).read_bytes("journal.jsonl").decode().splitlines(keepends=True)
    Remote.connect(out).write_bytes("journal.jsonl", "".join(lines[:2]).encode())  # the bucket saw only two answers
    journal = local_cache(out, "runs") / "run" / "journal.jsonl"
    journal.parent.mkdir(parents=True)
    journal.write_text("".join(lines[2:]) + '{"torn', encoding="utf-8")  # this machine had the rest, and a torn line
    llm = ScriptedLLM()
    synthesize(task, index, llm, SynthOptions(out=out, concurrency=1))
    assert llm.calls == []


# --- errors ---------------------------------------------------------------------------------------


def test_a_missing_bucket_is_one_line_before_any_work(bucket, tmp_path, s3_index):
    index, task = s3_index
    corpus = write_reuters_slice(tmp_path / "c.jsonl", 20)
    with pytest.raises(ConfigError) as exc:
        build_index(corpus, "news", EMBEDDER, root="s3://no-such-bucket-here/indexes")
    assert one_line(exc) == "bucket 'no-such-bucket-here' does not exist (create it, or fix the URI s3://no-such-bucket-here/indexes)"
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket-here' does not exist"):
        Index.open("news", "s3://no-such-bucket-here/indexes", embedder=EMBEDDER)
    llm = ScriptedLLM()
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket-here' does not exist"):
        synthesize(task, index, llm, SynthOptions(out="s3://no-such-bucket-here/runs/x"))
    assert llm.calls == []
    with pytest.raises(ConfigError, match="is not an s3:// URI with a bucket name"):
        Index.open("news", "s3://Bad_Bucket/x", embedder=EMBEDDER)


def test_wrong_credentials_are_access_denied_and_write_nothing(s3_index, bucket, endpoint, tmp_path):
    index, task = s3_index
    corpus = write_reuters_slice(tmp_path / "c.jsonl", 20)
    before = objects(f"s3://{bucket}")
    require_auth(endpoint, "0")
    try:
        with pytest.raises(ConfigError) as exc:
            build_index(corpus, "news", EMBEDDER, root=f"s3://{bucket}/indexes")
        with pytest.raises(ConfigError, match="access denied"):
            synthesize(task, index, ScriptedLLM(), SynthOptions(out=f"s3://{bucket}/runs/x"))
    finally:
        require_auth(endpoint, "inf")
    assert one_line(exc) == (f"access denied to s3://{bucket}/indexes (check AWS_ACCESS_KEY_ID / "
                             "AWS_SECRET_ACCESS_KEY, and the bucket's policy)")
    assert objects(f"s3://{bucket}") == before


class RecordingEmbedder(HashEmbedder):
    def __init__(self, dim: int):
        super().__init__(dim)
        self.texts: list[str] = []

    def encode(self, texts, batch_size: int = 64):
        self.texts.extend(texts)
        return super().encode(texts, batch_size)


def test_credentials_that_may_only_read_fail_before_any_embedding_or_llm_call(s3_index, bucket, read_only, tmp_path):
    index, task = s3_index
    root = f"s3://{bucket}/indexes"
    before = objects(f"s3://{bucket}")
    embedder = RecordingEmbedder(64)
    with pytest.raises(ConfigError) as exc:
        build_index(write_reuters_slice(tmp_path / "c.jsonl", 20), "other", embedder, root=root)
    message = str(exc.value)
    assert message == (f"access denied writing to {root}: these credentials may read it but not write and delete "
                       "objects there (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, and the bucket's policy)")
    assert read_only["SecretAccessKey"] not in message and embedder.texts == []
    llm = ScriptedLLM()
    with pytest.raises(ConfigError, match=f"^access denied writing to s3://{bucket}/runs/ro: "):
        synthesize(task, index, llm, SynthOptions(out=f"s3://{bucket}/runs/ro"))
    assert llm.calls == []
    assert len(Index.open("news", root, embedder=EMBEDDER)) == len(index)  # reading still works
    assert objects(f"s3://{bucket}") == before


def refusing_once() -> ScriptedLLM:
    """An LLM that refuses its first request, so a run takes a second round to replace it."""
    llm = ScriptedLLM(respond=lambda messages: "I'm sorry, but I can't help with that." if len(llm.calls) == 1
                      else default_answer(messages))
    return llm


def test_a_journal_upload_failing_after_a_round_warns_once_and_the_run_goes_on(s3_index, bucket, tmp_path, monkeypatch,
                                                                              caplog):
    index, task = s3_index
    out = f"s3://{bucket}/runs/flaky"
    whole = synthesize(task, index, refusing_once(), SynthOptions(out=tmp_path / "whole", concurrency=1))
    put_file = Remote.put_file

    def drop_the_journal(self, local, rel, limit=None):
        if rel == "journal.jsonl":
            raise ConfigError("cannot reach the S3 endpoint (the connection dropped)")
        put_file(self, local, rel, limit)

    llm = refusing_once()
    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, logger="engine.remote_run"):
        patch.setattr(Remote, "put_file", drop_the_journal)
        with pytest.raises(ConfigError, match="connection dropped"):  # every round ran; publishing fails loudly
            synthesize(task, index, llm, SynthOptions(out=out, concurrency=1))
    warned = [record.getMessage() for record in caplog.records if "after a round" in record.getMessage()]
    rounds = json.loads((tmp_path / "whole" / "manifest.json").read_text(encoding="utf-8"))["counts"]["rounds"]
    assert rounds >= 2 and len(warned) == 1 and "\n" not in warned[0] and len(llm.calls) == whole.calls
    assert "manifest.json" not in objects(out)

    again = ScriptedLLM()  # the local copy kept every answer: the same run publishes without paying again
    assert synthesize(task, index, again, SynthOptions(out=out, concurrency=1)).reused == whole.calls
    assert again.calls == [] and "manifest.json" in objects(out)


def test_an_unreachable_endpoint_is_one_line_and_writes_nothing(bucket, tmp_path, monkeypatch):
    corpus = write_reuters_slice(tmp_path / "c.jsonl", 20)
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    good = f"s3://{bucket}/indexes"
    with monkeypatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        with pytest.raises(ConfigError) as exc:
            build_index(corpus, "news", EMBEDDER, root=good)
        with pytest.raises(ConfigError, match="cannot reach the S3 endpoint"):
            list_indexes(good)
    assert one_line(exc) == f"cannot reach the S3 endpoint http://127.0.0.1:{port} (set AWS_ENDPOINT_URL, or check the server)"
    assert objects(f"s3://{bucket}") == {}
    assert not (tmp_path / "remote-cache").exists()


# --- the command line -----------------------------------------------------------------------------


def test_cli_index_search_and_synth_on_s3(bucket, tmp_path):
    from click.testing import CliRunner

    from engine.cli import main

    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args])

    corpus = write_reuters_slice(tmp_path / "reuters.jsonl", 60)
    root, out = f"s3://{bucket}/indexes", f"s3://{bucket}/runs/cli"
    built = invoke("index", corpus, "--name", "news", "--embedder", "hash-64", "--root", root)
    assert built.exit_code == 0, built.output
    assert built.stdout.startswith("index 'news': ") and built.stdout.rstrip().endswith(f"-> {root}/news")
    listed = invoke("indexes", "--root", root + "/")
    assert listed.exit_code == 0 and listed.stdout.startswith("news ") and "hash-64 (64-d)" in listed.stdout
    hits = invoke("search", "news", "crude oil prices OPEC", "--json", "--root", root)
    assert hits.exit_code == 0 and len(hits.stdout.splitlines()) == 10

    task = tmp_path / "task.yaml"
    task.write_text(oil_earnings_task("cli-s3", examples_per_label=2, seed=3, assign_labels=False), encoding="utf-8")
    resume = invoke("synth", task, "--index", "news", "--root", root, "--out", out, "--fake", "--resume")
    assert resume.exit_code == 1 and f"--resume: {out} holds no run to continue" in resume.stderr
    synth = invoke("synth", task, "--index", "news", "--root", root, "--out", out, "--fake")
    assert synth.exit_code == 0, synth.output
    assert f"manifest: {out}/manifest.json" in synth.stdout and set(objects(out)) == RUN_FILES
    again = invoke("synth", task, "--index", "news", "--root", root, "--out", out, "--fake", "--resume")
    assert again.exit_code == 0 and "LLM calls 0 (+4 reused from the journal" in again.stdout

    missing = invoke("indexes", "--root", "s3://no-such-bucket-here/x")
    assert missing.exit_code == 1 and missing.stderr.strip() == (
        "error: bucket 'no-such-bucket-here' does not exist (create it, or fix the URI s3://no-such-bucket-here/x)")


def test_cli_resume_after_a_crash_on_s3_pays_only_for_answers_not_journalled(bucket, tmp_path):
    from click.testing import CliRunner

    from engine.cli import main
    from engine.testing import FakeOpenAIServer, Fault

    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args])

    root, out = f"s3://{bucket}/indexes", f"s3://{bucket}/runs/crash"
    corpus = write_reuters_slice(tmp_path / "reuters.jsonl", 60)
    assert invoke("index", corpus, "--name", "news", "--embedder", "hash-64", "--root", root).exit_code == 0
    task = tmp_path / "task.yaml"
    task.write_text(oil_earnings_task("cli-crash", examples_per_label=2, seed=3, assign_labels=False), encoding="utf-8")
    synth = ("synth", task, "--index", "news", "--root", root, "--out", out, "--model", "fake-model", "--concurrency", "1",
             "--no-structured", "--no-cache")

    revoked = lambda number, _body: Fault.error(401, "key revoked") if number > 2 else None  # noqa: E731
    with FakeOpenAIServer(schedule=revoked) as server:
        crashed = invoke(*synth, "--base-url", server.base_url)
    assert crashed.exit_code != 0 and "rejected the API key (401)" in crashed.stderr
    assert set(objects(out)) == {"journal.jsonl", "run.json"}

    shutil.rmtree(tmp_path / "remote-cache")  # resumed on another machine: only the bucket knows the run
    with FakeOpenAIServer() as server:
        resumed = invoke(*synth, "--base-url", server.base_url, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert server.count == 2 and "LLM calls 2 (+2 reused from the journal" in resumed.stdout


def test_a_worker_shard_on_s3_uploads_what_it_added_as_parts_and_survives_a_failed_upload(bucket, monkeypatch, caplog):
    """The Ray actors' shard writer (engine/llm/shards.py) without Ray: each upload puts only the lines
    added since the last as a new part; a refused upload warns once and the next one sends those lines too;
    a new writer (a restarted actor, a re-run) knows every answer in the bucket."""
    import asyncio

    from engine.llm.shards import ShardWriter
    from engine.types import Completion

    folder = f"s3://{bucket}/runs/r/journal.d"

    async def work() -> ShardWriter:
        writer = ShardWriter(folder, upload_every=0)
        writer.journal.record_ok("a", "m", Completion("first", "m"))
        await writer.upload_now()
        real = writer.remote.write_bytes
        monkeypatch.setattr(writer.remote, "write_bytes", lambda rel, data: (_ for _ in ()).throw(ConfigError("denied")))
        writer.journal.record_ok("b", "m", Completion("second", "m"))
        with caplog.at_level(logging.WARNING):
            await writer.upload_now()
        assert "could not upload its journal shard" in caplog.text
        monkeypatch.setattr(writer.remote, "write_bytes", real)
        writer.journal.record_ok("c", "m", Completion("third", "m"))
        await writer.upload_now()
        await writer.upload_now()  # nothing new: no empty part
        return writer

    writer = asyncio.run(work())
    parts = Remote.connect(folder).list_files()
    assert sorted(parts) == [f"{writer.name}.000000.jsonl", f"{writer.name}.000001.jsonl"]
    second = Remote.connect(folder).read_bytes(f"{writer.name}.000001.jsonl").decode().splitlines()
    assert [json.loads(line)["request_id"] for line in second] == ["b", "c"]
    assert {key[0] for key in ShardWriter(folder).known} == {"a", "b", "c"}


def test_a_closed_worker_shard_on_s3_leaves_no_local_copy_unless_the_bucket_lacks_lines(bucket, monkeypatch, caplog):
    """A Ray actor closes its shard before it is killed: on S3 the last lines are uploaded and the local
    copy (in the remote cache) deleted; when the bucket refused them, the copy stays and a warning names it."""
    import asyncio

    from engine.llm.shards import ShardWriter
    from engine.types import Completion

    folder = f"s3://{bucket}/runs/r/journal.d"

    async def finish(refuse: bool) -> ShardWriter:
        writer = ShardWriter(folder, upload_every=0)
        writer.journal.record_ok(f"done-{refuse}", "m", Completion("answer", "m"))  # never uploaded before close
        if refuse:
            monkeypatch.setattr(writer.remote, "write_bytes", lambda rel, data: (_ for _ in ()).throw(ConfigError("denied")))
        await writer.close()
        return writer

    uploaded = asyncio.run(finish(refuse=False))
    assert not uploaded.journal.path.exists()
    assert {key[0] for key in ShardWriter(folder).known} == {"done-False"}
    with caplog.at_level(logging.WARNING):
        kept = asyncio.run(finish(refuse=True))
    assert kept.journal.path.exists() and "done-True" in kept.journal.path.read_text()
    assert f"{kept.journal.path} is not all in" in caplog.text
