"""The ceiling of this machine's loopback: one TCP stream carrying the full network's gradient
(6,924,705 float32 = 27.7 MB) from one process to another, as fast as the kernel moves it
(`sendall` of one buffer, `recv_into` a preallocated one, a one-byte acknowledgement per
transfer). It puts the gradient exchange's figures in context: how much of a step is the
transport itself. Prints the median of `--reps` transfers.
usage: python3 bench/loopback_tcp.py [--reps 10]
"""
import argparse
import multiprocessing as mp
import os
import socket
import statistics
import time

NBYTES = 6_924_705 * 4


def receiver(port_queue, reps):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port_queue.put(s.getsockname()[1])
    conn, _ = s.accept()
    buf = memoryview(bytearray(NBYTES))
    for _ in range(reps):
        got = 0
        while got < NBYTES:
            n = conn.recv_into(buf[got:], NBYTES - got)
            if n == 0:
                raise SystemExit("the sender closed early")
            got += n
        conn.sendall(b"k")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    q = mp.Queue()
    p = mp.Process(target=receiver, args=(q, args.reps))
    p.start()
    conn = socket.create_connection(("127.0.0.1", q.get()))
    data = os.urandom(NBYTES)
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        conn.sendall(data)
        conn.recv(1)
        times.append(time.perf_counter() - t)
    p.join()
    if p.exitcode != 0:
        raise SystemExit("the receiver failed")
    m = statistics.median(times)
    print(f"one stream, {NBYTES / 1e6:.1f} MB: median {m * 1e3:.1f} ms, {NBYTES / m / 1e9:.2f} GB/s")


if __name__ == "__main__":
    main()
