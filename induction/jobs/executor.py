"""Where independent pieces of work run: in this process, or as Ray tasks on a local runtime or a cluster.

`induction track --ray` and `induction sweep --ray` hand the same task function to either executor,
so a checkpoint is scored by the same code, with the same torch thread count, wherever it runs: the
merged report is the sequential one, to the bit (on the same kind of machine).

Ray (`pip install '.[ray]'`):
- no address: a private local runtime on this machine (loopback only, no dashboard, a throw-away
  auth token, a short temp dir), started for the run and shut down after;
- ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``: an existing cluster (`ray start --head`); a dead
  address fails in one line within seconds instead of Ray's minutes of retries.
Tasks are retried when their worker dies (`max_retries`), and on a Ctrl-C the driver cancels what
is still running. Ray's own output never reaches stdout (its driver prints worker deaths there
whatever `log_to_driver` says), so `--format json` stays clean. Workers read checkpoints from a
path they all see: on a cluster, give the run as an absolute path on a shared filesystem.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import secrets
import socket
import sys
import tempfile
from typing import Any, Callable, Iterator, Sequence, Union

from circuits.progress import progress_bar

RAY_INSTALL = "pip install 'induction-toolkit[ray]' (or: pip install 'ray==2.60.0')"


class ExecutorError(ValueError):
    """An executor that cannot run here (Ray missing, no cluster at an address, no GPU); one line."""


class LocalExecutor:
    """Runs every task in this process, one after the other."""

    name = "local"

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"executor": "local", "workers": 1}

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple], progress: bool = False, desc: str = "tasks",
            on_result: Callable[[int, Any], None] | None = None, unit: str = "task") -> list[Any]:
        out = []
        for i, args in enumerate(progress_bar(tasks, desc=desc, enabled=progress, stage=True, unit=unit)):
            out.append(fn(*args))
            if on_result is not None:
                on_result(i, out[-1])
        return out


class RayExecutor:
    """Runs each task as a Ray task (one CPU each, or one GPU each with `gpus_per_task`).

    Use as a context manager: entering starts (or joins) the runtime, leaving shuts down what it
    started. `address`: None for a local runtime, else ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, gpus_per_task: int | float = 0,
                 max_retries: int = 3) -> None:
        if importlib.util.find_spec("ray") is None:
            raise ExecutorError(f"the Ray executor needs Ray, which is not installed: {RAY_INSTALL}")
        self.address = None if address in (None, "", "local") else str(address)
        self.num_cpus = num_cpus
        self.gpus_per_task = gpus_per_task
        self.max_retries = max_retries
        self._stack: contextlib.ExitStack | None = None

    # -- the runtime ---------------------------------------------------------------------------------

    def __enter__(self) -> "RayExecutor":
        self._stack = contextlib.ExitStack()
        try:
            self._stack.enter_context(ray_runtime(self.address, self.num_cpus))
            self._check_gpus()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stack is not None:
            self._stack.close()

    def _check_gpus(self) -> None:
        import ray

        if self.gpus_per_task:
            gpus = ray.cluster_resources().get("GPU", 0)
            if gpus < self.gpus_per_task:
                # A task that asks for a GPU the cluster lacks is never scheduled and never fails.
                where = "this machine's Ray runtime" if self.address is None else f"the Ray cluster at {self.address}"
                raise ExecutorError(f"device = cuda: {where} has {gpus:g} GPU(s); use device = cpu")

    def describe(self) -> dict[str, Any]:
        import ray

        resources = ray.cluster_resources()
        return {"executor": "ray", "address": self.address or "local", "workers": int(resources.get("CPU", 0)),
                "gpus": int(resources.get("GPU", 0)), "nodes": len([n for n in ray.nodes() if n.get("Alive")])}

    # -- the work ------------------------------------------------------------------------------------

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple], progress: bool = False, desc: str = "tasks",
            on_result: Callable[[int, Any], None] | None = None, unit: str = "task") -> list[Any]:
        """`[fn(*args) for args in tasks]`, each a Ray task; results in task order; one progress bar."""
        import ray

        remote = ray.remote(fn).options(num_cpus=1, num_gpus=self.gpus_per_task, max_retries=self.max_retries,
                                        retry_exceptions=[OSError])
        pending = {remote.remote(*args): i for i, args in enumerate(tasks)}
        results: dict[int, Any] = {}
        bar = progress_bar(total=len(tasks), desc=f"{desc} (ray)", enabled=progress, stage=True, unit=unit)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
                    for ref in done:
                        i = pending.pop(ref)
                        results[i] = ray.get(ref)  # a task that failed for good raises here
                        if on_result is not None:
                            on_result(i, results[i])
                        bar.update(1)
        except BaseException:  # Ctrl-C, or a task that failed for good: stop the rest
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()
        return [results[i] for i in range(len(tasks))]


@contextlib.contextmanager
def ray_runtime(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Start a private local Ray runtime (address None) or join a cluster, for the block.

    An already initialised Ray (a test session's, a notebook's) is used as it is and left running.
    Python's stdout points at stderr meanwhile: Ray's driver prints worker deaths to stdout.
    """
    if address is None:
        if "ray" not in sys.modules:
            # Read by Ray when first imported (so only then): everything on 127.0.0.1, and an ephemeral
            # token in the environment (inherited by raylet and workers) instead of ~/.ray/auth_token.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            if "RAY_AUTH_MODE" not in os.environ:
                os.environ["RAY_AUTH_MODE"] = "token"
                os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    else:
        _check_address(address)
        token = os.environ.get("RAY_AUTH_TOKEN") or os.path.exists(os.path.expanduser("~/.ray/auth_token"))
        if "RAY_AUTH_MODE" not in os.environ and token:
            os.environ["RAY_AUTH_MODE"] = "token"  # Ray 2.60 sends the token to explicit addresses only then
        if address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
            raise ExecutorError("ray = ray://...: Ray Client needs grpcio: pip install 'ray[client]'")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    with contextlib.redirect_stdout(sys.stderr):
        started = not ray.is_initialized()
        if started:
            if address is None:
                # A short temp dir: Ray puts unix sockets under it (107-byte path limit).
                temp = tempfile.mkdtemp(prefix="ray_ind_", dir="/tmp")
                # Workers import the same `induction` as this driver, wherever it was found.
                here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
                path = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR, object_store_memory=128 * 2**20, _temp_dir=temp,
                         runtime_env={"env_vars": {"PYTHONPATH": path}})
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield
    finally:
        if started:
            with contextlib.redirect_stdout(sys.stderr):
                ray.shutdown()


def _check_address(address: str) -> None:
    """Fail in one line, within seconds, when no Ray head answers at an explicit address (Ray itself
    retries for minutes, or hangs on a server that is not Ray's); `auto` is Ray's own lookup and
    fails fast by itself.

    A Ray head's GCS port (and a Ray Client server, ``ray://``) speaks gRPC, which is HTTP/2: sent
    HTTP/2's client preface, it answers with a SETTINGS frame. A web server, a database or anything
    else answers otherwise, or not at all within `PROBE_TIMEOUT_S`. With TLS (``RAY_USE_TLS``) the
    preface cannot be sent in the clear, and only the connection is checked.
    """
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"ray = {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        conn = socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S)
    except OSError as exc:
        raise ExecutorError(f"ray = {address}: no Ray cluster answers there ({exc.strerror or exc})") from None
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        conn.close()
        return
    try:
        with conn:
            conn.settimeout(PROBE_TIMEOUT_S)
            conn.sendall(H2_PREFACE + H2_EMPTY_SETTINGS)
            reply = b""
            while len(reply) < 9:
                chunk = conn.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
    except OSError:
        reply = b""
    if len(reply) < 9 or reply[3] != H2_SETTINGS:
        seen = reply[:16].split(b"\r\n")[0].decode("ascii", "replace") if reply else "no answer"
        raise ExecutorError(f"ray = {address}: the server there is not a Ray head (it does not speak gRPC: "
                            f"{seen!r}); give the Ray head's GCS address (ray start --head prints it)")


PROBE_TIMEOUT_S = 5.0
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type SETTINGS, no flags, stream 0
H2_SETTINGS = 0x04


Executor = Union[LocalExecutor, RayExecutor]
"""Either executor: both have `map`, `describe` and are context managers."""


def executor_for(ray_address: str | None, use_ray: bool, gpus_per_task: int | float = 0) -> LocalExecutor | RayExecutor:
    """The executor a `--ray [ADDRESS]` option asks for (`use_ray` False: this process)."""
    return RayExecutor(ray_address, gpus_per_task=gpus_per_task) if use_ray else LocalExecutor()
