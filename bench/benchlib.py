"""Helpers shared by bench/tokens.py and bench/soak.py; standard library only."""

import socket
import threading
from typing import Callable


def ports(count: int) -> None:
    """Prints COUNT free loopback ports, one a line."""
    # All sockets are held open together so the ports differ; the small race with other
    # processes after closing is acceptable for a benchmark on loopback.
    held = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)
    print("\n".join(str(s.getsockname()[1]) for s in held))
    for s in held:
        s.close()


def run_workers(work: Callable[[int], None], workers: int) -> None:
    """Runs work(0) .. work(workers - 1) on threads of their own and waits for them all."""
    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "ports":
        ports(int(sys.argv[2]))
    else:
        sys.exit("usage: benchlib.py ports COUNT")
