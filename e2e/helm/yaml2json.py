#!/usr/bin/env python3
"""YAML stream (file or stdin) -> JSON array of its non-empty documents. Used by the Rust tests so they
need no YAML crate. usage: yaml2json.py [FILE]"""
import json, sys
import yaml
src = open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin
docs = [d for d in yaml.safe_load_all(src) if d is not None]
json.dump(docs, sys.stdout)
