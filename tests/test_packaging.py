"""The installed wheel works on its own: no file of the checkout is needed.

Builds the wheel (not editable), installs it into a fresh virtual
environment, and opens the Cassandra store from there against the session's
Apache Cassandra, which creates its schema from the CQL shipped as package
data. The fresh environment borrows the dependencies of the project's
virtual environment through a ``.pth`` line (installing them again from the
network would take minutes), but not the project itself: the editable
install's finder lives in a ``.pth`` of that environment, which a borrowed
path does not run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import uuid
import venv
from pathlib import Path

import pytest

from deploy.engines.common import EngineInfo
from tests.paths import ROOT

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv with the interest-stream wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the tracked files: a build writes build/ and egg-info/ beside them.
    tracked = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (work / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, work / "src" / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(work / "dist"), str(work / "src")],
        check=True, cwd=work, timeout=300,
    )  # fmt: skip
    (wheel,) = (work / "dist").glob("interest_stream-*.whl")
    env = work / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    (site / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
         str(wheel)],
        check=True, timeout=300,
    )  # fmt: skip
    return python


def test_the_wheel_carries_the_cassandra_schema_and_opens_the_store(
    installed: Path, cassandra_engine: EngineInfo, tmp_path: Path
) -> None:
    keyspace = f"wheel_{uuid.uuid4().hex[:8]}"
    script = f"""
import json, streams, streams.stores.cassandra as c
from streams.settings import Settings
from streams.worker import open_store
settings = Settings(store="cassandra", cassandra_contact_points={cassandra_engine.host!r},
                    cassandra_port={cassandra_engine.port}, cassandra_keyspace={keyspace!r})
store = open_store(settings)
store.put_states([])
print(json.dumps({{"package": streams.__file__, "schema": str(c.SCHEMA_FILE),
                   "states": len(store.get_states(["nobody"]))}}))
store.drop_keyspace()
store.close()
"""
    out = subprocess.run(
        [str(installed), "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert not got["package"].startswith(str(ROOT)), "imported the checkout, not the wheel"
    assert Path(got["schema"]).is_file() and not got["schema"].startswith(str(ROOT))
    assert got["states"] == 0


def test_setup_refuses_an_unknown_installer_before_touching_anything(tmp_path: Path) -> None:
    """A typo in INTEREST_STREAM_INSTALLER is an error, not a silent pip install."""
    copy = tmp_path / "checkout"
    (copy / "deploy").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "setup.sh", copy / "deploy" / "setup.sh")
    run = subprocess.run(
        ["bash", "deploy/setup.sh"],
        cwd=copy,
        env={"PATH": "/usr/bin:/bin", "INTEREST_STREAM_INSTALLER": "uvv"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == "INTEREST_STREAM_INSTALLER must be uv or pip, not 'uvv'"
    assert not (copy / ".venv").exists()
