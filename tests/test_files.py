"""Output files are written whole, with the usual permissions, into checked folders."""

import os
import stat

import pytest

from sslbench.bench.errors import UserError
from sslbench.bench.files import check_writable, write_json_atomic


def test_atomic_writes_get_the_umask_mode_not_the_temporary_files(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "out" / "record.json", {"accuracy": 0.9})
    finally:
        os.umask(old)
    path = tmp_path / "out" / "record.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text().strip().startswith("{")
    assert not list(path.parent.glob("*.part"))


def test_a_file_in_the_way_of_an_output_folder_is_one_clear_error(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(UserError, match="plain is a file, not a folder"):
        check_writable(tmp_path / "plain" / "report")
