"""The shell scripts the README's commands run: syntax, lint, and the Debian-install path as root and as a user.

`scripts/apt_install.sh` is run for real with fake `apt-get`, `dpkg-query`, `id` and `sudo` first on
PATH, so the test sees the exact commands it would run on a fresh machine (the bug this guards
against: as root, `$SUDO DEBIAN_FRONTEND=noninteractive apt-get` tried to execute the variable).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh")) + [ROOT / ".ci" / "run"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_parses(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_shellcheck_finds_no_warnings():
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (scripts/test.sh installs Debian's shellcheck)")
    result = subprocess.run(["shellcheck", "--severity=warning", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _fake_debian(tmp_path: Path, uid: int, installed: set[str]) -> tuple[dict[str, str], Path]:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    _tool(bin_dir, "id", f'[ "$1" = "-u" ] && echo {uid}\n')
    _tool(bin_dir, "sudo", f'echo "sudo $*" >> {log}\nexec "$@"\n')
    _tool(bin_dir, "apt-get", f'echo "apt-get $* frontend=${{DEBIAN_FRONTEND:-unset}}" >> {log}\n')
    cases = "\n".join(f'  {pkg}) echo -n "install ok installed";;' for pkg in installed)
    _tool(bin_dir, "dpkg-query", f'pkg="${{@: -1}}"\ncase "$pkg" in\n{cases}\n  *) exit 1;;\nesac\n')
    env = {key: value for key, value in os.environ.items() if key != "DEBIAN_FRONTEND"}
    env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    return env, log


def _apt_install(env: dict[str, str], *packages: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "apt_install.sh"), *packages],
                          env=env, capture_output=True, text=True)


def test_as_root_apt_get_runs_directly_and_noninteractive(tmp_path):
    env, log = _fake_debian(tmp_path, uid=0, installed={"chromium"})
    result = _apt_install(env, "chromium", "chromium-driver", "shellcheck")
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls == ["apt-get update -qq frontend=unset",
                     "apt-get install -y -qq chromium-driver shellcheck frontend=noninteractive"]


def test_as_a_user_apt_get_goes_through_sudo(tmp_path):
    env, log = _fake_debian(tmp_path, uid=1000, installed=set())
    assert _apt_install(env, "shellcheck").returncode == 0
    calls = log.read_text().splitlines()
    assert calls[0] == "sudo apt-get update -qq"
    assert calls[2] == "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck"
    assert calls[3].endswith("frontend=noninteractive")


def test_nothing_missing_runs_no_apt_get(tmp_path):
    env, log = _fake_debian(tmp_path, uid=0, installed={"chromium", "shellcheck"})
    assert _apt_install(env, "chromium", "shellcheck").returncode == 0
    assert not log.exists()


def test_a_failed_install_is_an_error_naming_the_packages(tmp_path):
    env, log = _fake_debian(tmp_path, uid=0, installed=set())
    _tool(tmp_path / "bin", "apt-get", "exit 100\n")
    result = _apt_install(env, "chromium-driver")
    assert result.returncode == 1
    assert "could not install chromium-driver" in result.stderr and "apt-get install chromium-driver" in result.stderr
