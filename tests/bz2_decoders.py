"""The two decoders of whole bz2 files (bert_core/corpus/readers.py): 7-Zip's in a child process when
`7zz` (or `7z`) is on PATH, else indexed_bzip2. A test that takes the `bz2_decoder` fixture runs on
both; import it into a test module with

    from bz2_decoders import bz2_decoder  # noqa: F401  (fixture)

`bz2_decoder` is the environment to run `bert` with (run_bert(..., env=...)): for indexed_bzip2 a
PATH whose directories hold everything the usual PATH does except 7-Zip's programs; in this process
readers.seven_zip is patched to find none. The 7-Zip case skips, saying so, where it is not installed.
"""

from __future__ import annotations

import os
import pathlib

import pytest

DECODERS = ("7zz", "indexed_bzip2")
SEVEN_ZIP_NAMES = {"7zz", "7z", "7za", "7zr"}


def seven_zip_or_skip() -> str:
    from bert_core.corpus import readers

    program = readers.seven_zip()
    if program is None:
        pytest.skip("7-Zip is not installed (`7zz`: apt package 7zip; scripts/setup_env.sh installs it)")
    return program


def path_without_seven_zip(where: pathlib.Path) -> str:
    """A PATH of one directory, `where`, of links to every program on PATH but 7-Zip's (first one wins)."""
    where.mkdir(parents=True, exist_ok=True)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        try:
            names = os.listdir(directory or ".")
        except OSError:
            continue
        for name in names:
            link = where / name
            if name not in SEVEN_ZIP_NAMES and not os.path.lexists(link):
                link.symlink_to(os.path.join(os.path.abspath(directory or "."), name))
    return str(where)


_NO_SEVEN_ZIP: list[str] = []  # the PATH above, made once a test session


@pytest.fixture(params=DECODERS)
def bz2_decoder(request, monkeypatch, tmp_path_factory) -> dict[str, str]:
    from bert_core.corpus import readers

    if request.param == "7zz":
        seven_zip_or_skip()
        return {}
    if not _NO_SEVEN_ZIP:
        _NO_SEVEN_ZIP.append(path_without_seven_zip(tmp_path_factory.mktemp("no7zip") / "bin"))
    monkeypatch.setattr(readers, "seven_zip", lambda: None)
    return {"PATH": _NO_SEVEN_ZIP[0]}
