#!/usr/bin/env python3
"""Runs every curl example of README.md against a lossd and checks it returns what the README
says: each ```sh block that starts with `curl` and is followed by a ```json block.

Usage: .ci/check_readme.py [path/to/lossd]   (default: target/release/lossd)
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "target/release/lossd")
text = open(os.path.join(root, "README.md")).read()
pairs = re.findall(r"```sh\n(curl .*?)```\n```json\n(.*?)```", text, re.S)
if not pairs:
    sys.exit("no curl examples found")

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
proc = subprocess.Popen([binary, "--addr", f"127.0.0.1:{port}", "--log", "warn"])
try:
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    failed = 0
    for command, expected in pairs:
        command = command.replace("localhost:8080", f"127.0.0.1:{port}").replace("\\\n", " ")
        got = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True).stdout
        if json.loads(got) != json.loads(expected):
            failed += 1
            print(f"FAIL: {command.strip()[:100]}...\n  README: {expected.strip()}\n  got:    {got.strip()}")
    print(f"README examples: {len(pairs) - failed} of {len(pairs)} return what the README says")
    sys.exit(1 if failed else 0)
finally:
    proc.terminate()
    proc.wait()
