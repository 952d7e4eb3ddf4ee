#!/usr/bin/env python3
"""Small helpers for bench/compare.sh.

Subcommands:
  free-ports N LOW HIGH     print N loopback TCP ports in [LOW, HIGH) that can be bound now
  idle-conns                open keep-alive connections, do one request on each, hold them idle
  gen-routes                write a multi-document Route file with many routes
  oha-summary FILE          print "p50_ms p99_ms rps ok total" from oha's JSON output
  wrk-summary FILE          print "requests rps non2xx socket_errors" from wrk's text output
"""

import argparse
import json
import os
import random
import re
import resource
import socket
import sys
import time


def free_ports(args):
    rng = random.Random(os.getpid() ^ int(time.time()))
    candidates = list(range(args.low, args.high))
    rng.shuffle(candidates)
    found = []
    for port in candidates:
        if len(found) == args.n:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        found.append(port)
    if len(found) < args.n:
        sys.exit("not enough free ports")
    print(" ".join(map(str, found)))


def read_response(sock, buf=b""):
    """Reads one HTTP/1.1 response; returns (status, leftover bytes)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    if b"content-length" in headers:
        need = int(headers[b"content-length"])
        while len(rest) < need:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in body")
            rest += chunk
        return status, rest[need:]
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in chunked body")
            rest += chunk
        return status, b""
    return status, rest


def idle_conns(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    req = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\n"
        "User-Agent: idle-conns\r\nAccept: */*\r\n\r\n"
    ).encode()
    deadline = time.monotonic() + args.open_timeout
    socks = []
    bad = 0
    for _ in range(args.count):
        if time.monotonic() > deadline:
            sys.exit(f"gave up opening connections after {len(socks)}")
        s = socket.create_connection(("127.0.0.1", args.port), timeout=10)
        s.sendall(req)
        status, _ = read_response(s)
        if status != 200:
            bad += 1
        socks.append(s)
    print(f"READY {len(socks)} non200={bad}", flush=True)
    # Hold until the stop file appears or the hold time runs out.
    end = time.monotonic() + args.hold
    while time.monotonic() < end:
        if os.path.exists(args.stop_file):
            break
        time.sleep(0.1)
    # Count connections the server closed while they were held.
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    print(f"DONE closed_by_server={closed}", flush=True)


def gen_routes(args):
    """Routes spread over three host kinds (exact, wildcard, none) and two path kinds
    (PathPrefix, RegularExpression); one exact-host PathPrefix route is the target."""
    n = args.count
    target = None
    docs = []
    for i in range(n):
        host_kind = i % 3
        path_kind = (i // 3) % 2
        if host_kind == 0:
            hosts = f'["svc-{i}.bench.example.com"]'
        elif host_kind == 1:
            hosts = f'["*.t{i}.bench.example.com"]'
        else:
            hosts = None
        if path_kind == 0:
            path = f"{{ type: PathPrefix, value: /api/v{i} }}"
        else:
            path = f'{{ type: RegularExpression, value: "/re/v{i}/[0-9]+/items" }}'
        if target is None and i >= n * 3 // 4 and host_kind == 0 and path_kind == 0:
            target = i
        doc = [
            "apiVersion: portcullis.dev/v1alpha1",
            "kind: Route",
            f"metadata: {{ name: r{i}, namespace: bench }}",
            "spec:",
        ]
        if hosts:
            doc.append(f"  hosts: {hosts}")
        doc += [
            "  rules:",
            "    - matches:",
            f"        - path: {path}",
            "      backends:",
            f'        - address: "{args.backend}"',
        ]
        docs.append("\n".join(doc) + "\n")
    with open(args.out, "w") as f:
        f.write("---\n".join(docs))
    if target is None:
        sys.exit("no target route")
    print(f"svc-{target}.bench.example.com /api/v{target}/items")


def oha_summary(args):
    with open(args.file) as f:
        text = f.read()
    # Older oha versions may print text before the JSON object.
    data = json.loads(text[text.index("{"):])
    pct = data.get("latencyPercentiles") or data.get("latency_percentiles") or {}

    def pick(name):
        for k, v in pct.items():
            if k.lower().replace("%", "").replace(".0", "") in (name, name.lstrip("p")):
                return float(v)
        raise SystemExit(f"oha JSON has no {name}: {sorted(pct)}")

    summary = data.get("summary", {})
    rps = float(summary.get("requestsPerSec") or 0)
    statuses = data.get("statusCodeDistribution") or {}
    ok = sum(int(v) for k, v in statuses.items() if str(k).startswith("2"))
    errors = sum(int(v) for v in (data.get("errorDistribution") or {}).values())
    total = sum(int(v) for v in statuses.values()) + errors
    print(f"{pick('p50') * 1000:.4f} {pick('p99') * 1000:.4f} {rps:.1f} {ok} {total}")


def wrk_summary(args):
    with open(args.file) as f:
        text = f.read()
    m = re.search(r"(\d+) requests in", text)
    r = re.search(r"Requests/sec:\s*([\d.]+)", text)
    if not m or not r:
        raise SystemExit("cannot parse wrk output")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    sock_errors = sum(int(x) for x in sock.groups()) if sock else 0
    print(f"{m.group(1)} {r.group(1)} {non2xx.group(1) if non2xx else 0} {sock_errors}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)

    a = sub.add_parser("free-ports")
    a.add_argument("n", type=int)
    a.add_argument("low", type=int)
    a.add_argument("high", type=int)
    a.set_defaults(func=free_ports)

    a = sub.add_parser("idle-conns")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--count", type=int, default=2000)
    a.add_argument("--host", default="localhost")
    a.add_argument("--path", default="/")
    a.add_argument("--hold", type=float, default=90)
    a.add_argument("--open-timeout", type=float, default=60)
    a.add_argument("--stop-file", required=True)
    a.set_defaults(func=idle_conns)

    a = sub.add_parser("gen-routes")
    a.add_argument("--count", type=int, default=10000)
    a.add_argument("--backend", required=True)
    a.add_argument("--out", required=True)
    a.set_defaults(func=gen_routes)

    a = sub.add_parser("oha-summary")
    a.add_argument("file")
    a.set_defaults(func=oha_summary)

    a = sub.add_parser("wrk-summary")
    a.add_argument("file")
    a.set_defaults(func=wrk_summary)

    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
