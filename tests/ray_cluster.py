"""A real multi-node Ray cluster on this machine, on loopback only, for tests and benchmarks.

Ray does not stay on 127.0.0.1 when asked (it swaps in the routable address and listens on every
interface), so the cluster lives in a network namespace of its own whose only interface is ``lo``:
``ip netns add aios-ray-PID-N``. Every node is started there with ``ip netns exec``; a test body
enters the same namespace on the calling thread (``setns``, see :meth:`RayCluster.inside`), so the
drivers, probes and detached processes it starts are in it too. Each node offers one ``aios_host``
and its CPUs; token authentication is on.

Stopping never uses ``ray stop`` (which kills every Ray process on the machine, other people's
included): it kills exactly the processes inside the namespace, deletes the namespace and the
cluster's temp folder. A reaper process outside the namespace does the same if the test process
dies without stopping (even by SIGKILL); ``start`` also clears what a dead test run left behind.

A test module uses one cluster (a start costs ~5 s and a stop ~1 s on an idle machine)::

    @pytest.fixture(scope="module")
    def cluster():
        with RayCluster(hosts=2) as c:
            yield c

and runs its bodies ``with cluster.inside():``. ``python tests/ray_cluster.py`` starts one, prints it, stops it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CLONE_NEWNET = 0x40000000
HEAD_PORT = 6390
PREFIX = "aios-ray-"
NETNS_DIR = Path("/var/run/netns")
START_TIMEOUT_S = 240  # `ray start` takes ~5 s on an idle 2-core machine, far longer on a busy one
# A raylet waits a fixed ~15 s for its node's agent (a heavy Python import) and dies if it is late, so on
# a busy machine a node may fail to start: the nodes start in a scheduler autogroup (a session) of their
# own with a raised priority (plain nice does nothing across autogroups), which is set back to normal once
# all nodes are up; a start that fails anyway is retried from scratch. All nodes share that one session:
# with one session per node, CFS shares the CPUs between the nodes' groups, and the two ranks of a gang,
# whose collectives wake each other thousands of times a step, ran at 0.80 of the same two processes in
# one group (bench/cluster.py, 2 cores); separate hosts have no such coupling.
START_NICE = -10
# The session's leader: runs each command it reads (a JSON argv per line) and answers [rc, stdout, stderr].
LAUNCHER = """
import json, subprocess, sys
for line in sys.stdin:
    argv, timeout = json.loads(line)
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        out = [r.returncode, r.stdout, r.stderr]
    except subprocess.TimeoutExpired as exc:
        out = [-1, str(exc.stdout or ""), f"timed out after {timeout} s"]
    print(json.dumps(out), flush=True)
"""
START_ATTEMPTS = 3
BIN = Path(sys.executable).parent
_counter = iter(range(1_000_000))
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _pids_in(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def kill_namespace(ns: str, root: str | None, spare: tuple[int, ...] = (), delete: bool = True) -> None:
    """SIGKILL every process in network namespace ``ns`` (but ``spare``), delete it and ``root``."""
    if (NETNS_DIR / ns).exists():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = [p for p in _pids_in(ns) if p not in spare]
            if not pids:
                break
            for p in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            time.sleep(0.2)
        if delete:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
    if root:
        shutil.rmtree(root, ignore_errors=True)


def clear_stale() -> None:
    """Remove the namespaces (and their processes) of test runs whose process is gone."""
    if not NETNS_DIR.is_dir():
        return
    for entry in NETNS_DIR.iterdir():
        if not entry.name.startswith(PREFIX):
            continue
        try:
            owner = int(entry.name[len(PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
            kill_namespace(entry.name, str(Path(tempfile.gettempdir()) / entry.name))


class RayCluster:
    """``hosts`` Ray nodes (a head and ``hosts - 1`` more) in one loopback-only network namespace.

    ``node_local`` is a folder that every node but the head sees as its own empty tmpfs (the head
    and this process see the folder itself): a path that is *not* shared between hosts.
    """

    def __init__(self, hosts: int = 2, cpus: int = 2, devices: int = 4, auth: bool = True):
        self.hosts, self.cpus, self.devices, self.auth = hosts, cpus, devices, auth
        self.ns = f"{PREFIX}{os.getpid()}-{next(_counter)}"
        self.root = Path(tempfile.gettempdir()) / self.ns  # short: Ray's socket paths must fit 107 bytes
        self.address = f"127.0.0.1:{HEAD_PORT}"
        self.token_path = self.root / "token"
        self.node_local = self.root / "node-local"
        self._reaper: subprocess.Popen | None = None
        self._launcher: subprocess.Popen | None = None  # the nodes' session (see LAUNCHER)
        self._started = False

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> RayCluster:
        """Create the namespace and start every node; on any failure, stop what started and raise."""
        clear_stale()
        self.root.mkdir(mode=0o700)
        self.node_local.mkdir()
        self.token_path.write_text(secrets.token_hex(32))
        self.token_path.chmod(0o600)
        subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True)
        self._started = True
        atexit.register(self.stop)
        self._reaper = subprocess.Popen(
            [sys.executable, __file__, "--reap", str(os.getpid()), self.ns, str(self.root)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._exec(["ip", "link", "set", "lo", "up"])
            for attempt in range(1, START_ATTEMPTS + 1):
                try:
                    for i in range(self.hosts):
                        self._start_node(i)
                    self._renice(0)
                    break
                except RuntimeError as exc:  # a raylet gave up on a slow agent: start afresh
                    if attempt == START_ATTEMPTS:
                        raise
                    print(f"[ray_cluster] attempt {attempt} failed, retrying: {str(exc).splitlines()[0]}")
                    self._clear()
        except BaseException:
            self.stop()
            raise
        return self

    def _renice(self, value: int) -> None:
        """Set the autogroup priority of every process in the namespace (workers join their raylet's)."""
        for p in self.pids():
            with contextlib.suppress(OSError):
                Path(f"/proc/{p}/autogroup").write_text(str(value))

    def _clear(self) -> None:
        """Kill the nodes started so far and forget their state (the namespace stays)."""
        kill_namespace(self.ns, None, spare=(os.getpid(),), delete=False)
        shutil.rmtree(self.root / "ray", ignore_errors=True)

    def stop(self) -> None:
        """Kill every process in the namespace, delete it and the temp folder (idempotent)."""
        if not self._started:
            return
        self._started = False
        kill_namespace(self.ns, str(self.root), spare=(os.getpid(),))
        for helper in (self._reaper, self._launcher):
            if helper is not None:
                helper.kill()
                helper.wait()
        atexit.unregister(self.stop)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- using it --------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment for Ray processes and drivers of this cluster (token auth on when ``auth``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            RAY_USAGE_STATS_ENABLED="0",
            RAY_agent_register_timeout_ms=str(START_TIMEOUT_S * 1000),
            XLA_FLAGS=f"--xla_force_host_platform_device_count={self.devices}",
            JAX_PLATFORMS="cpu",
            # A Ray worker never needs aios's catalog: make any attempt to reach it fail loudly.
            AIOS_HOME="/dev/null/no-aios-home-on-ray-nodes",
        )
        if self.auth:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
        else:
            env["RAY_AUTH_MODE"] = "disabled"
        return env

    @contextlib.contextmanager
    def inside(self) -> Iterator[RayCluster]:
        """Run the calling thread (and every process it starts) inside the cluster's namespace."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(NETNS_DIR / self.ns, os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield self
            finally:
                _setns(home)
        finally:
            os.close(target)
            os.close(home)

    def run(self, cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the namespace with the cluster's environment."""
        return self._exec(cmd, timeout=timeout, **kw)

    def pids(self) -> list[int]:
        """Processes inside the namespace now (Ray's daemons and workers, drivers started inside)."""
        return [p for p in _pids_in(self.ns) if p != os.getpid()]

    # -- internals -------------------------------------------------------------------------------

    def _exec(self, cmd: list[str], timeout: float = START_TIMEOUT_S, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(["ip", "netns", "exec", self.ns, *cmd], env=self.env(), timeout=timeout, check=True, **kw)

    def _in_nodes_session(self, cmd: list[str], timeout: float = START_TIMEOUT_S) -> None:
        """Run ``cmd`` in the namespace, in the nodes' one session (a new autogroup, its priority raised)."""
        if self._launcher is None or self._launcher.poll() is not None:
            script = f'echo {START_NICE} > /proc/self/autogroup 2>/dev/null; exec "$@"'
            argv = ["ip", "netns", "exec", self.ns, "sh", "-c", script, "sh", sys.executable, "-c", LAUNCHER]
            self._launcher = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=self.env(), start_new_session=True
            )
        self._launcher.stdin.write(json.dumps([cmd, timeout]) + "\n")
        self._launcher.stdin.flush()
        answer = self._launcher.stdout.readline()
        if not answer:
            raise RuntimeError(f"the nodes' launcher died starting {cmd[:3]}")
        rc, out, err = json.loads(answer)
        if rc != 0:
            raise subprocess.CalledProcessError(rc, cmd, out, err)

    def _start_node(self, i: int) -> None:
        base = HEAD_PORT + 10 * (i + 1)
        ports = {  # fixed ports: the raylet then waits for no port file that a slow agent writes late
            "--node-manager-port": base,
            "--object-manager-port": base + 1,
            "--dashboard-agent-grpc-port": base + 2,
            "--dashboard-agent-listen-port": base + 3,
            "--runtime-env-agent-port": base + 4,
            "--metrics-export-port": base + 5,
        }
        args = [str(BIN / "ray"), "start", "--disable-usage-stats", "--num-cpus", str(self.cpus)]
        args += ["--resources", json.dumps({"aios_host": 1}), "--object-store-memory", str(100 * 2**20)]
        args += ["--temp-dir", str(self.root / "ray")]
        for flag, port in ports.items():
            args += [flag, str(port)]
        if i == 0:
            args += ["--head", "--port", str(HEAD_PORT), "--include-dashboard", "false"]
            args += ["--ray-client-server-port", str(HEAD_PORT + 1)]
            cmd = args
        else:
            args += ["--address", self.address]
            # This node's own view of node_local: an empty tmpfs in a mount namespace of its own.
            script = 'mount -t tmpfs -o size=16m aios-node-local "$1" && shift && exec "$@"'
            cmd = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh"]
            cmd += [str(self.node_local), *args]
        try:
            self._in_nodes_session(cmd)
        except subprocess.CalledProcessError as exc:
            tail = "\n".join((exc.stdout + exc.stderr).splitlines()[-3:])
            raise RuntimeError(f"ray start of node {i} failed:\n{tail}\n{self._log_tails()}") from None

    def _log_tails(self, n: int = 6) -> str:
        """The last lines of the raylets' and GCS's logs (the start error says little by itself)."""
        logs = self.root / "ray" / "session_latest" / "logs"
        out = []
        for f in sorted(logs.glob("raylet*.out")) + sorted(logs.glob("gcs_server.out")):
            lines = f.read_text(errors="replace").splitlines()
            fatal = [line for line in lines if "Check failed" in line or " F " in line[:40]]
            out += [f"--- {f.name}", *fatal[:2], *lines[-n:]]
        return "\n".join(out)


def _reap(owner: int, ns: str, root: str) -> None:
    """Wait for ``owner`` to exit, then remove its cluster (the safety net for a killed test run)."""
    while Path(f"/proc/{owner}").exists():
        time.sleep(1)
    kill_namespace(ns, root, spare=(os.getpid(),))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reap"]:
        _reap(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        sys.exit(0)
    t0 = time.monotonic()
    with RayCluster(hosts=2) as c:
        t1 = time.monotonic()
        print(f"started {c.hosts} nodes in {t1 - t0:.1f} s at {c.address}; {len(c.pids())} processes")
        code = "import ray; ray.init(address='auto'); print(ray.cluster_resources())"
        print(c.run([sys.executable, "-c", code.replace("'auto'", repr(c.address))]).stdout.strip())
        t2 = time.monotonic()
    print(f"stopped in {time.monotonic() - t2:.1f} s; namespace gone: {not (NETNS_DIR / c.ns).exists()}")
