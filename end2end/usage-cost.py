#!/usr/bin/env python3
"""What sampling usage costs the dispatcher: 100 peers (`sleep 40`) on the
local backend, with --usage-every-secs 0 (off), 1 and 5; the dispatcher's
own CPU over 20 s (from /proc/<pid>/stat) and its resident memory.
Prints one line per setting; compare them within one run.

    cargo build --release -p dispatcher && end2end/usage-cost.py
"""
import json, os, shutil, subprocess, tempfile, time, urllib.request
HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("DISPATCHER_BIN", os.path.join(HERE, "..", "target", "release", "dispatcher"))
def run(every):
    d = tempfile.mkdtemp(prefix="usage-cost-")
    port = 47000 + int(every * 10)
    p = subprocess.Popen([BIN, "-d", d, "-p", str(port), "--cpus", "4", "--mem-mb", "8192", "--ports", "45000-45199", "--usage-every-secs", str(every)], stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/api/health"); break
        except Exception: time.sleep(0.1)
    import urllib.request as u
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"sleeper\"\r\n\r\n#!/bin/sh\nsleep 40\n\r\n--{boundary}--\r\n").encode()
    u.urlopen(u.Request(base + "/api/apps", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}))
    req = json.dumps({"app": "sleeper", "role_file": "name: s\npeers: 100\ncpu: 0.01\n"}).encode()
    jid = json.load(u.urlopen(u.Request(base + "/api/jobs", data=req, headers={"Content-Type": "application/json"})))["id"]
    for _ in range(100):
        j = json.load(u.urlopen(f"{base}/api/jobs/{jid}"))
        if j["peers_running"] == 100: break
        time.sleep(0.2)
    time.sleep(3)
    def cpu_rss():
        f = open(f"/proc/{p.pid}/stat").read().rsplit(") ", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        rss = int(open(f"/proc/{p.pid}/status").read().split("VmRSS:")[1].split()[0]) * 1024
        return (int(f[11]) + int(f[12])) / tick, rss
    c0, _ = cpu_rss(); t0 = time.time()
    time.sleep(20)
    c1, rss = cpu_rss(); t1 = time.time()
    j = json.load(u.urlopen(f"{base}/api/jobs/{jid}"))
    samples = sum(pp.get("usage_samples", 0) for pp in j["peers"])
    p.terminate(); p.wait()
    shutil.rmtree(d, ignore_errors=True)
    return (c1 - c0) / (t1 - t0), rss, samples
for every in [0, 1.0, 5.0]:
    cores, rss, samples = run(every)
    print(f"usage-every-secs={every}: dispatcher {cores*100:.2f}% of a core, RSS {rss/2**20:.1f} MiB, samples stored so far {samples}")
