"""torch.distributed for an embedded Ray, on loopback only.

Ray Train's own set-up has rank 0 start torch's rendezvous store (a ``TCPStore``), which listens on
every interface of the machine whatever ``MASTER_ADDR`` says; the store hands out keys to whoever
connects. An embedded Ray runs all workers on this machine, so here rank 0 opens the listening
socket itself on 127.0.0.1 and gives it to the store (``master_listen_fd``), and every rank, rank 0
included, joins as a client of that store (torch's ``TORCHELASTIC_USE_AGENT_STORE``, the mode in
which a launcher already hosts the store). Gloo's own connections are pinned to the loopback
interface with ``GLOO_SOCKET_IFNAME`` (``loopback_worker_env``).

A run on a cluster of several machines keeps Ray Train's default: its ranks must reach rank 0.
Imported (with Ray) only when an embedded run starts its trainer.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _setup_torch_process_group, _TorchBackend

LOOPBACK = "127.0.0.1"
# Kept alive in rank 0's process for as long as the process group lives: (listening socket, store).
_STORE: list[Any] = []


class LoopbackTorchConfig(TorchConfig):
    """``TorchConfig`` whose process group rendezvous listens on 127.0.0.1 only."""

    @property
    def backend_cls(self):
        return _LoopbackTorchBackend


class _LoopbackTorchBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig) -> None:
        import ray

        world = len(worker_group)
        port = worker_group.execute_single(0, _host_loopback_store, world, backend_config.timeout_s)
        worker_group.execute(_join_store_as_client, port=port)
        worker_group.execute(_set_torch_distributed_env_vars)  # RANK, LOCAL_RANK, ... as Ray Train sets them
        ray.get(
            [
                worker_group.execute_single_async(
                    rank,
                    _setup_torch_process_group,
                    backend=backend_config.backend or "gloo",
                    world_rank=rank,
                    world_size=world,
                    init_method="env://",
                    timeout_s=backend_config.timeout_s,
                )
                for rank in range(world)
            ]
        )


def _host_loopback_store(world_size: int, timeout_s: float) -> int:
    """Rank 0: a TCPStore server on a socket bound to 127.0.0.1; its port."""
    from torch.distributed import TCPStore

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOOPBACK, 0))
    listener.listen(max(128, world_size))
    port = listener.getsockname()[1]
    store = TCPStore(
        LOOPBACK,
        port,
        world_size,
        is_master=True,
        timeout=dt.timedelta(seconds=timeout_s),
        wait_for_workers=False,
        master_listen_fd=listener.fileno(),
    )
    _STORE[:] = [listener, store]
    return port


def _join_store_as_client(port: int) -> None:
    import os

    os.environ.update(
        {"MASTER_ADDR": LOOPBACK, "MASTER_PORT": str(port), "TORCHELASTIC_USE_AGENT_STORE": "True"}
    )


def loopback_worker_env() -> dict[str, str]:
    """Gloo's connections on the loopback interface (by default: the host name's address)."""
    return {"GLOO_SOCKET_IFNAME": loopback_interface()}


def loopback_interface() -> str:
    """The name of the interface holding 127.0.0.1 (`lo` on Linux, `lo0` on macOS)."""
    import psutil  # a DeepSpeed dependency, so present wherever workers run

    for name, addresses in psutil.net_if_addrs().items():
        if any(address.address == LOOPBACK for address in addresses):
            return name
    return "lo"
