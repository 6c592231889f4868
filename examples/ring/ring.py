#!/usr/bin/env python3
"""An example Dispatcher app: every peer says hello to the job's first peer.

Peer 0 listens on its port and waits for a greeting from every other peer,
answers each, and writes what it heard to result.txt (which ends up in the
job's archive). The other peers connect to peer 0, greet it and print the
answer. Every peer first prints the config Dispatcher gave it.
"""
import os
import socket
import sys
import time

index = int(os.environ["DISPATCHER_PEER_INDEX"])
count = int(os.environ["DISPATCHER_PEER_COUNT"])
port = int(os.environ["DISPATCHER_PORT"])
first_host, first_port = os.environ["DISPATCHER_FIRST_PEER"].rsplit(":", 1)
role = os.environ["DISPATCHER_ROLE"]

print(f"peer {index} of {count} (role {role!r}), listening on port {port}")
print("--- my peer config (peer.yaml) ---")
print(open(os.environ["DISPATCHER_PEER_CONFIG"]).read(), flush=True)

if index == 0:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen()
    heard = []
    while len(heard) < count - 1:
        conn, _ = server.accept()
        with conn:
            msg = conn.recv(1024).decode()
            heard.append(msg)
            print(f"heard: {msg}", flush=True)
            conn.sendall(f"welcome, {msg.split()[-1]}".encode())
    with open("result.txt", "w") as out:
        out.write("\n".join(sorted(heard)) + "\n")
    print(f"all {count - 1} peers said hello", flush=True)
else:
    deadline = time.time() + 30
    while True:
        try:
            with socket.create_connection((first_host, int(first_port)), timeout=5) as s:
                s.sendall(f"hello from peer {index}".encode())
                print(f"peer 0 answered: {s.recv(1024).decode()}", flush=True)
                break
        except OSError as e:
            if time.time() > deadline:
                print(f"could not reach peer 0: {e}", file=sys.stderr)
                sys.exit(1)
            time.sleep(0.1)
