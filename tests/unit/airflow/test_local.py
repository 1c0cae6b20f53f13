"""The local launcher's secrets: the admin password file is never readable by others."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mlops import io
from mlops.airflow import local


@pytest.fixture
def modes_when_written(monkeypatch) -> list[tuple[str, int]]:
    """The mode each file had right after text was written to it (before any chmod)."""
    seen: list[tuple[str, int]] = []
    write = Path.write_text

    def spy(self: Path, *args, **kwargs) -> int:
        n = write(self, *args, **kwargs)
        seen.append((self.name, stat.S_IMODE(self.stat().st_mode)))
        return n

    monkeypatch.setattr(Path, "write_text", spy)
    return seen


def test_the_password_file_is_private_from_its_first_byte(tmp_path, modes_when_written) -> None:
    # when the launcher generates the admin password
    password, path = local.seed_password(tmp_path / "home")
    # then every file that held it was 0600 while it did, and the file is 0600
    assert password in path.read_text()
    assert modes_when_written and {m for _, m in modes_when_written} == {0o600}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # and a second start keeps the password
    assert local.seed_password(tmp_path / "home") == (password, path)


def test_a_damaged_password_file_is_named(tmp_path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / local.PASSWORDS_FILE).write_text('{"admin": "x')
    with pytest.raises(io.DamagedState, match="Delete it: a new admin password is generated"):
        local.seed_password(home)


def test_atomic_writes_take_the_mode_before_the_content(tmp_path, modes_when_written) -> None:
    # given a file that others may read, when it is replaced with a secret (mode 0o600)
    target = tmp_path / "secret.json"
    io.write_text(target, "{}")
    with io.atomic_path(target, 0o600) as tmp:
        assert stat.S_IMODE(tmp.stat().st_mode) == 0o600  # before a byte is written
        tmp.write_text('{"admin": "pw"}')
    # then the secret was private throughout, and a plain write keeps the umask's mode
    assert modes_when_written[-1] == (tmp.name, 0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    io.write_text(target, "{}")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~io._umask()
