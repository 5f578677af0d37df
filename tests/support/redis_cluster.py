"""A private Redis Cluster: three masters, each with a replica, on free loopback ports.

Started with ``redis-server --cluster-enabled yes`` and ``redis-cli --cluster
create``; stopped by process id, like :class:`RedisServer`.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from .redis_server import RedisServer
from .servers import free_port


class RedisCluster:
    def __init__(self, directory: Path, masters: int = 3, replicas: int = 1) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for number in range(masters * (1 + replicas)):
                node_directory = directory / f"node{number}"
                node_directory.mkdir()
                # The bus port too is a free one (by default it is the port + 10000).
                cluster_args = ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
                cluster_args += ["--cluster-node-timeout", "3000"]
                self.nodes.append(RedisServer(node_directory, extra_args=cluster_args))
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", str(replicas), "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_until_ok()
        except BaseException:
            self.stop()
            raise
        #: The URL of one node: the client finds the others from it.
        self.url = self.nodes[0].url

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Until every node says the cluster is up and agrees on who holds which slot, and replicas are in sync."""
        deadline = time.monotonic() + timeout
        while True:
            states, maps, links = set(), set(), set()
            for node in self.nodes:
                with node.client() as client:
                    states.add(client.cluster("INFO")["cluster_state"])
                    maps.add(repr(sorted((s[0], s[1], s[2][1]) for s in client.execute_command("CLUSTER SLOTS"))))
                    links.add(client.info("replication").get("master_link_status", "up"))
            if states == {"ok"} and len(maps) == 1 and links == {"up"}:
                return
            if time.monotonic() > deadline:
                state = f"{states}, {len(maps)} slot maps, replica links {links}"
                raise TimeoutError(f"the Redis Cluster is not ok after {timeout} s: {state}")
            time.sleep(0.05)

    def node_of(self, key: str) -> RedisServer:
        """The master that holds ``key``."""
        with self.nodes[0].client() as client:
            slot = client.execute_command("CLUSTER KEYSLOT", key)
            for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return next(node for node in self.nodes if node.port == master[1])
        raise LookupError(f"no node holds the slot of {key!r}")

    def replica_of(self, master: RedisServer) -> RedisServer:
        for node in self.nodes:
            with node.client() as client:
                info = client.info("replication")
                if info["role"] == "slave" and info["master_port"] == master.port:
                    return node
        raise LookupError(f"the node on port {master.port} has no replica")

    def fail_over(self, master: RedisServer) -> RedisServer:
        """Make the replica of ``master`` the master of its slots, as an operator would; the new master."""
        replica = self.replica_of(master)
        with replica.client() as client:
            client.execute_command("CLUSTER FAILOVER")
        deadline = time.monotonic() + 30
        while True:
            with replica.client() as client:
                if client.info("replication")["role"] == "master":
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the replica on port {replica.port} did not take over")
            time.sleep(0.05)
        self.wait_until_ok()
        return replica

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster.from_url(self.url)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
