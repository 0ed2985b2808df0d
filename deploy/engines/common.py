"""What both engine launchers share: jars from Maven Central, ports, processes.

An engine is described by an :class:`EngineSpec` (its name, version, how to
build its command line, how to ask it whether it answers); :func:`start`,
:func:`stop` and :func:`status` run the same life cycle for every engine:

* ``start``: reuse a running engine of this home if it answers; otherwise
  clean a stale pid file, refuse ports held by another process, assemble the
  jars once (cached per version, see :func:`ensure_jars`), spawn the JVM in its
  own process group, and wait until the engine answers a real request.
* ``stop``: SIGTERM to the process group, wait, SIGKILL if it lingers.
* ``status``: the recorded :class:`EngineInfo` if the engine is alive and answers.

Layout of a home: ``HOME/<engine>/{data,logs}``, ``HOME/<engine>/<engine>.pid``
and ``HOME/<engine>/info.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from streams.ports import LOOPBACK

log = logging.getLogger("deploy.engines")

REPO_ROOT = Path(__file__).resolve().parents[2]

INSTALL_HINTS = {
    "java": "install a Java 17 runtime, e.g. `apt-get install openjdk-17-jre-headless`",
    "mvn": "install Apache Maven, e.g. `apt-get install maven` (it fetches the jars "
    "from Maven Central once)",
    "keytool": "install a Java 17 JDK or JRE (keytool ships with it)",
}


class EngineError(RuntimeError):
    """An engine could not be started, stopped or reached; the message says why."""


@dataclass(frozen=True)
class EngineInfo:
    """A running engine as its clients need to know it.

    Attributes
    ----------
    name: ``"kafka"`` or ``"cassandra"``.
    host, port: where clients connect (bootstrap server / contact point).
    pid: the JVM's process id (also its process group id).
    version: the engine's version (Cassandra's as it reports it).
    ready_seconds: from spawning the JVM to the first answered request; for a
        reused engine, the figure recorded when it was started.
    reused: True when ``start`` found this engine already running.
    home: the launcher home the engine's data and logs live under.
    ports: every port the engine listens on, by role.
    """

    name: str
    host: str
    port: int
    pid: int
    version: str
    ready_seconds: float
    reused: bool
    home: Path
    ports: Mapping[str, int] = field(default_factory=dict, compare=False)

    @property
    def address(self) -> str:
        """``host:port``, e.g. ``127.0.0.1:9092``."""
        return f"{self.host}:{self.port}"

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["home"] = str(self.home)
        data["ports"] = dict(self.ports)
        data["address"] = self.address
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> EngineInfo:
        return cls(
            name=str(data["name"]),
            host=str(data["host"]),
            port=int(data["port"]),  # type: ignore[arg-type]
            pid=int(data["pid"]),  # type: ignore[arg-type]
            version=str(data["version"]),
            ready_seconds=float(data["ready_seconds"]),  # type: ignore[arg-type]
            reused=bool(data["reused"]),
            home=Path(str(data["home"])),
            ports={str(k): int(v) for k, v in dict(data.get("ports") or {}).items()},  # type: ignore[call-overload]
        )

    def describe(self) -> str:
        """One line for people: what runs where, and how long it took to answer."""
        how = "reused, started earlier" if self.reused else "started"
        others = ", ".join(f"{k} {v}" for k, v in self.ports.items() if v != self.port)
        return (
            f"{self.name} {self.version} at {self.address} (pid {self.pid}, {how}; "
            f"ready in {self.ready_seconds:.1f} s"
            + (f"; also {others}" if others else "")
            + f"; home {self.home / self.name})"
        )


# --- homes, env ------------------------------------------------------------------


def default_home() -> Path:
    """``$INTEREST_STREAM_ENGINES_HOME`` or ``.engines/`` under the repo root."""
    env = os.environ.get("INTEREST_STREAM_ENGINES_HOME")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / ".engines"


def env_int(name: str) -> int | None:
    """An integer from the environment, or None; a malformed value is an error."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise EngineError(f"{name}={raw!r} is not an integer") from None


def require_tool(name: str) -> str:
    """The path of an executable on PATH, or a clear error saying what to install."""
    path = shutil.which(name)
    if path is None:
        hint = INSTALL_HINTS.get(name, f"install {name}")
        raise EngineError(f"`{name}` not found on PATH: {hint}")
    return path


# --- jars ------------------------------------------------------------------------


def jar_cache_root() -> Path:
    """``$INTEREST_STREAM_JAR_CACHE`` or ``~/.cache/interest-stream/jars`` (XDG-aware)."""
    env = os.environ.get("INTEREST_STREAM_JAR_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "interest-stream" / "jars"


MARKER = ".complete"


def ensure_jars(engine: str, version: str, pom: Path, version_property: str) -> Path:
    """The folder holding ``engine``'s runtime jars, fetched with Maven once.

    The folder is ``<cache>/<engine>-<version>``, shared by every clone and run
    on this machine. A marker file holding the pom's hash is written only after
    Maven copied everything, so an interrupted copy is redone, and so is one
    made from a different pom (e.g. a bumped logging backend). Concurrent
    callers serialise on a lock file.
    """
    target = jar_cache_root() / f"{engine}-{version}"
    pom_hash = hashlib.sha256(pom.read_bytes()).hexdigest()
    marker = target / MARKER
    if _marker_matches(marker, pom_hash):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / f".{target.name}.lock"):
        if _marker_matches(marker, pom_hash):
            return target
        mvn = require_tool("mvn")
        partial = target.parent / f".{target.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        cmd = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
            f"-D{version_property}={version}",
        ]
        log.info("fetching %s %s jars from Maven Central into %s", engine, version, target)
        began = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        jars = sorted(partial.glob("*.jar")) if partial.is_dir() else []
        if proc.returncode != 0 or not jars:
            shutil.rmtree(partial, ignore_errors=True)
            output = (proc.stdout + proc.stderr).strip().splitlines()
            raise EngineError(
                f"Maven could not fetch the {engine} {version} jars (exit {proc.returncode}): "
                f"{' '.join(cmd)}\n" + "\n".join(output[-40:])
            )
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        marker.write_text(pom_hash + "\n")
        log.info("fetched %d %s jars in %.1f s", len(jars), engine, time.monotonic() - began)
    return target


def _marker_matches(marker: Path, pom_hash: str) -> bool:
    try:
        return marker.read_text().strip() == pom_hash
    except OSError:
        return False


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def find_jar(jars: Path, prefix: str) -> Path:
    """The one jar in ``jars`` whose name starts with ``prefix`` (e.g. ``jamm-``)."""
    found = sorted(jars.glob(f"{prefix}*.jar"))
    if not found:
        raise EngineError(f"no {prefix}*.jar in {jars}; delete the folder to fetch it again")
    return found[-1]


# --- ports -----------------------------------------------------------------------


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """True if nothing listens on host:port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_answers(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True if a TCP connection to host:port is accepted."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listener_of(port: int) -> str:
    """Best effort: ``pid N (cmd)`` of the process listening on ``port``, or ''."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    if not inodes:
        return ""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    return f"pid {proc.name} ({cmd.strip()[:120]})"
        except OSError:
            continue
    return ""


def refuse_taken_ports(name: str, ports: Mapping[str, int]) -> None:
    """Raise if another process already listens on one of the engine's ports."""
    for role, port in ports.items():
        if not port_free(port):
            holder = listener_of(port)
            raise EngineError(
                f"cannot start {name}: {role} port {LOOPBACK}:{port} is already in use"
                + (f" by {holder}" if holder else " by another process")
                + "; stop that process or choose another port (see --help)"
            )


# --- processes -------------------------------------------------------------------

# Popen handles of the engines this Python process spawned: kept so they are
# reaped when they exit (no zombie that would look alive) and not garbage
# collected with a ResourceWarning while the engine runs.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def cmdline_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def spawn(cmd: Sequence[str], *, cwd: Path, out: Path, env: Mapping[str, str]) -> int:
    """Start ``cmd`` in its own session, stdout/stderr appended to ``out``; its pid."""
    with open(out, "ab") as sink:
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc.pid


def terminate(pid: int, *, grace: float = 30.0) -> bool:
    """SIGTERM the process group led by ``pid``, SIGKILL after ``grace`` seconds.

    Returns True if it had to use SIGKILL.
    """

    def signal_group(sig: int) -> None:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return False
        time.sleep(0.1)
    log.warning("pid %d still runs %.0f s after SIGTERM; sending SIGKILL", pid, grace)
    signal_group(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def tail(paths: Sequence[Path], lines: int = 30) -> str:
    """The last ``lines`` lines of each existing file, headed by its path."""
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        if text:
            parts.append(f"--- last lines of {path} ---\n" + "\n".join(text[-lines:]))
    return "\n".join(parts) if parts else "(no log output)"


# --- the life cycle --------------------------------------------------------------


class EngineSpec(ABC):
    """One engine: what to run and how to tell it answers.

    Subclasses set ``name``, ``main_class`` and implement the abstract methods;
    the life cycle itself is :func:`start`, :func:`stop`, :func:`status`.
    """

    name: str
    main_class: str
    version: str
    ready_timeout: float = 120.0
    stop_grace: float = 30.0

    def dir(self, home: Path) -> Path:
        return home / self.name

    def pid_file(self, home: Path) -> Path:
        return self.dir(home) / f"{self.name}.pid"

    def info_file(self, home: Path) -> Path:
        return self.dir(home) / "info.json"

    def logs(self, home: Path) -> Path:
        return self.dir(home) / "logs"

    def data(self, home: Path) -> Path:
        return self.dir(home) / "data"

    @abstractmethod
    def ports(self, port: int | None) -> dict[str, int]:
        """Every port to listen on by role; the first is the client port."""

    @abstractmethod
    def jars(self) -> Path:
        """The folder of runtime jars (fetched once, see :func:`ensure_jars`)."""

    @abstractmethod
    def prepare(self, home: Path, ports: Mapping[str, int], jars: Path) -> list[str]:
        """Write config under ``home``, do one-off setup; the JVM command line."""

    @abstractmethod
    def probe(self, port: int, timeout: float) -> str | None:
        """The engine's version if it answers a real request on ``port``, else None."""

    @abstractmethod
    def log_files(self, home: Path) -> list[Path]:
        """Logs worth showing when the engine fails to come up."""


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_info(spec: EngineSpec, home: Path) -> EngineInfo | None:
    try:
        return EngineInfo.from_json(json.loads(spec.info_file(home).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _ours(spec: EngineSpec, home: Path, pid: int) -> bool:
    """Is ``pid`` alive and this engine started for this home (not a reused pid)?"""
    if not pid_alive(pid):
        return False
    cmd = cmdline_of(pid)
    return spec.main_class in cmd and str(spec.dir(home)) in cmd


def _running(spec: EngineSpec, home: Path) -> tuple[int | None, EngineInfo | None]:
    """The pid of this home's engine if it runs, and its recorded info.

    A pid file whose process is gone (or is now some other program) is removed.
    """
    pid_file = spec.pid_file(home)
    pid = _read_pid(pid_file)
    if pid is None:
        return None, None
    if not _ours(spec, home, pid):
        log.info(
            "%s: removing stale pid file %s (pid %d is gone or is another program)",
            spec.name,
            pid_file,
            pid,
        )
        pid_file.unlink(missing_ok=True)
        return None, None
    info = _read_info(spec, home)
    if info is not None and info.pid != pid:
        info = None
    return pid, info


def running_pid(spec: EngineSpec, home: Path) -> int | None:
    """The pid of this home's engine if it runs (a stale pid file is removed)."""
    return _running(spec, Path(home).resolve())[0]


def status(spec: EngineSpec, home: Path) -> EngineInfo | None:
    """The engine of ``home`` if it runs and answers, else None."""
    home = Path(home).resolve()
    pid, info = _running(spec, home)
    if pid is None or info is None:
        return None
    if spec.probe(info.port, timeout=5.0) is None:
        return None
    return info


def start(
    spec: EngineSpec, home: Path, port: int | None = None, timeout: float | None = None
) -> EngineInfo:
    """Start ``spec``'s engine under ``home`` (or reuse the one running there).

    ``port`` None means the engine's default (or the port it already runs on).
    Raises :class:`EngineError` with the engine log's tail if it does not
    answer within ``timeout`` seconds; the half-started process is then killed.
    """
    home = Path(home).resolve()
    timeout = spec.ready_timeout if timeout is None else timeout
    spec.dir(home).mkdir(parents=True, exist_ok=True)
    with locked(spec.dir(home) / ".lock"):
        reused = _reuse(spec, home, port, timeout)
        if reused is not None:
            return reused
        return _launch(spec, home, port, timeout)


def _reuse(spec: EngineSpec, home: Path, port: int | None, timeout: float) -> EngineInfo | None:
    pid, info = _running(spec, home)
    if pid is None:
        return None
    if info is None:
        raise EngineError(
            f"{spec.name} runs as pid {pid} for {spec.dir(home)} but its info.json is "
            f"missing or unreadable; run `python -m deploy.engines {spec.name} stop --home {home}`"
        )
    if port is not None and port != info.port:
        raise EngineError(
            f"{spec.name} already runs for {spec.dir(home)} on port {info.port} (pid {pid}), "
            f"not on the {port} asked for; stop it first or use another --home"
        )
    # Alive and ours but maybe still starting (another process launched it):
    # give it the same time a fresh start would get.
    deadline = time.monotonic() + timeout
    while spec.probe(info.port, timeout=5.0) is None:
        if not pid_alive(pid) or time.monotonic() > deadline:
            raise EngineError(
                f"{spec.name} pid {pid} for {spec.dir(home)} does not answer on port "
                f"{info.port}; stop it and start again\n{tail(spec.log_files(home))}"
            )
        time.sleep(0.5)
    reused = dataclasses.replace(info, reused=True)
    log.info("%s already running, reusing it: %s", spec.name, reused.describe())
    return reused


def _launch(spec: EngineSpec, home: Path, port: int | None, timeout: float) -> EngineInfo:
    require_tool("java")
    ports = spec.ports(port)
    refuse_taken_ports(spec.name, ports)
    jars = spec.jars()
    spec.logs(home).mkdir(parents=True, exist_ok=True)
    spec.data(home).mkdir(parents=True, exist_ok=True)
    cmd = spec.prepare(home, ports, jars)
    env = {**os.environ}
    for name in ("JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH"):
        env.pop(name, None)  # they would silently change the JVM we start
    out = spec.logs(home) / f"{spec.name}.out"
    (spec.dir(home) / "command.txt").write_text(" ".join(cmd) + "\n")
    client_port = next(iter(ports.values()))
    log.info("starting %s %s on %s:%d", spec.name, spec.version, LOOPBACK, client_port)
    began = time.monotonic()
    pid = spawn(cmd, cwd=spec.dir(home), out=out, env=env)
    spec.pid_file(home).write_text(f"{pid}\n")
    try:
        version = _wait_ready(spec, home, pid, client_port, began + timeout, timeout)
    except BaseException:
        terminate(pid, grace=10)
        spec.pid_file(home).unlink(missing_ok=True)
        raise
    info = EngineInfo(
        name=spec.name,
        host=LOOPBACK,
        port=client_port,
        pid=pid,
        version=version,
        ready_seconds=round(time.monotonic() - began, 2),
        reused=False,
        home=home,
        ports=ports,
    )
    spec.info_file(home).write_text(json.dumps(info.to_json(), indent=2) + "\n")
    log.info("%s ready: %s", spec.name, info.describe())
    return info


def _wait_ready(
    spec: EngineSpec, home: Path, pid: int, port: int, deadline: float, timeout: float
) -> str:
    while True:
        if not pid_alive(pid):
            raise EngineError(
                f"{spec.name} exited during startup (pid {pid}); "
                f"logs under {spec.logs(home)}\n{tail(spec.log_files(home))}"
            )
        if port_answers(port):
            version = spec.probe(port, timeout=5.0)
            if version is not None:
                return version
        if time.monotonic() > deadline:
            raise EngineError(
                f"{spec.name} did not answer on {LOOPBACK}:{port} within {timeout:.0f} s "
                f"(pid {pid}, killed); logs under {spec.logs(home)}\n"
                f"{tail(spec.log_files(home))}"
            )
        time.sleep(0.25)


def stop(spec: EngineSpec, home: Path) -> bool:
    """Stop the engine of ``home``; False (and a log line) if none was running."""
    home = Path(home).resolve()
    pid, _ = _running(spec, home)
    if pid is None:
        log.info("%s is not running for %s; nothing to stop", spec.name, spec.dir(home))
        return False
    log.info("stopping %s (pid %d)", spec.name, pid)
    began = time.monotonic()
    killed = terminate(pid, grace=spec.stop_grace)
    spec.pid_file(home).unlink(missing_ok=True)
    log.info(
        "%s stopped in %.1f s%s",
        spec.name,
        time.monotonic() - began,
        " (SIGKILL after SIGTERM timed out)" if killed else "",
    )
    return True
