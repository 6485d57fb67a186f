"""A TCP relay in front of a server (the tests' and the bench's PostgreSQL) that can make the server vanish.

`refuse()`: nothing listens (a connect is refused at once). `black_hole()`: a listener whose queue is
full and is never accepted from, so that the kernel drops every new SYN, as a host that is gone (or a
firewall that drops) does: a connect waits until its own timeout. `restore()`: relaying again, on the
same port. Every mode change ends the connections relayed so far.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Relay:
    """Relays 127.0.0.1:`port` to 127.0.0.1:`target`, one pair of threads per connection."""

    def __init__(self, target: int):
        self.target = target
        self._listener = self._listen(backlog=64)
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []  # the black hole's listener and the connection that fills its queue
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._serve()

    def _listen(self, backlog: int, port: int = 0) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(backlog)
        return listener

    def _serve(self) -> None:
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed: refused or black-holed from now on
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _stop(self) -> None:
        for s in [self._listener, *self._held]:
            if s is not None:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept(), which close() would not
                s.close()
        self._listener, self._held = None, []
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def refuse(self) -> None:
        """Nothing listens: every connect is refused at once."""
        self._stop()

    def black_hole(self) -> None:
        """Every new connect hangs until its timeout: the listener's one-place queue is filled and never emptied."""
        self._stop()
        listener = self._listen(backlog=0, port=self.port)
        filler = socket.create_connection(("127.0.0.1", self.port), timeout=5)  # takes the queue's place
        self._held = [listener, filler]

    def restore(self) -> None:
        """Relay again, on the same port."""
        self._stop()
        self._listener = self._listen(backlog=64, port=self.port)
        self._serve()

    def close(self) -> None:
        """End everything."""
        self._stop()
