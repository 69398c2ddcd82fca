#!/usr/bin/env python3
"""Subscribes to a UnisonDB ZeroMQ PUB endpoint and prints one JSON line per notification.
The one subscriber script of the test suites (node loopback tests and the cluster e2e).

usage: zmq_sub.py ENDPOINT COUNT [TOPIC_PREFIX ...]
Prints "READY" first, once subscribed, so a test knows when to start writing; then one
{"topic": ..., "payload": ...} line per message (payload parsed as JSON, else kept as text).
With COUNT > 0 it exits after COUNT messages (or 20 s of silence, printing TIMEOUT, exit code 1);
with COUNT 0 it runs until killed.
"""
import json
import sys

import zmq


def main() -> int:
    endpoint, count = sys.argv[1], int(sys.argv[2])
    prefixes = sys.argv[3:] or [""]
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    if count > 0:
        sub.setsockopt(zmq.RCVTIMEO, 20000)
    for p in prefixes:
        sub.setsockopt_string(zmq.SUBSCRIBE, p)
    sub.connect(endpoint)
    print("READY", flush=True)
    received = 0
    while count == 0 or received < count:
        try:
            parts = sub.recv_multipart()
        except zmq.Again:
            print("TIMEOUT", flush=True)
            return 1
        topic = parts[0].decode(errors="replace")
        payload = parts[1].decode(errors="replace") if len(parts) > 1 else ""
        try:
            payload = json.loads(payload)
        except ValueError:
            pass
        print(json.dumps({"topic": topic, "payload": payload}), flush=True)
        received += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
