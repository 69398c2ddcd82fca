#!/usr/bin/env python3
"""ZeroMQ SUB client for the cluster e2e: prints every message as one JSON line [topic, payload-json].
usage: zmq-sub.py tcp://IP:4002 TOPIC_PREFIX   (run with the venv's python: pyzmq)"""
import json, sys
import zmq

s = zmq.Context().socket(zmq.SUB)
s.connect(sys.argv[1])
s.setsockopt_string(zmq.SUBSCRIBE, sys.argv[2] if len(sys.argv) > 2 else "")
print(json.dumps(["_subscribed", sys.argv[1]]), flush=True)
while True:
    parts = s.recv_multipart()
    topic = parts[0].decode(errors="replace")
    payload = parts[1].decode(errors="replace") if len(parts) > 1 else ""
    try:
        payload = json.loads(payload)
    except ValueError:
        pass
    print(json.dumps([topic, payload]), flush=True)
