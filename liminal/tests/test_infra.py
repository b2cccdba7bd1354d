"""The embedded Valkey keeps its port across a restart (stop, start), so the platform's
processes, which hold its URL, reconnect on their own."""

import socket
import threading
import time

import redis

from liminal import infra


def test_a_restarted_valkey_comes_back_on_its_port_and_clients_reconnect(tmp_path, monkeypatch):
    monkeypatch.setenv("LIMINAL_VAR_DIR", str(tmp_path))
    url = infra.ensure_redis()
    try:
        client = redis.Redis.from_url(url + "/0")
        client.set("before", "1")
        assert infra.stop_redis()
        # Something holds the port for a moment while the server restarts; the restart waits.
        port = int(url.rsplit(":", 1)[1])
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        threading.Timer(1.0, holder.close).start()
        started = time.monotonic()
        assert infra.ensure_redis() == url
        assert time.monotonic() - started >= 0.9
        client.set("after", "1")  # the same client object, reconnected
        assert client.get("after") == b"1"
    finally:
        infra.stop_redis()
