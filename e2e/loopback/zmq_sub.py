#!/usr/bin/env python3
"""Subscribes to a UnisonDB ZeroMQ PUB endpoint and prints one JSON line per notification.

usage: zmq_sub.py ENDPOINT COUNT [TOPIC_PREFIX ...]
Prints {"topic": ..., "payload": {...}} lines, then exits after COUNT messages (or 20 s of silence,
with exit code 1). Prints "READY" first, once subscribed, so a test knows when to start writing.
"""
import json
import sys

import zmq


def main() -> int:
    endpoint, count = sys.argv[1], int(sys.argv[2])
    prefixes = sys.argv[3:] or [""]
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVTIMEO, 20000)
    for p in prefixes:
        sub.setsockopt_string(zmq.SUBSCRIBE, p)
    sub.connect(endpoint)
    print("READY", flush=True)
    for _ in range(count):
        try:
            topic, payload = sub.recv_multipart()
        except zmq.Again:
            print("TIMEOUT", flush=True)
            return 1
        print(json.dumps({"topic": topic.decode(), "payload": json.loads(payload)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
