"""Provisioning a fleet: the password/ACL files taza uses vs Mosquitto's dynamic-security plugin.

Files (what the production profile uses): ``taza devices add`` for N devices of a fleet file
(N secrets, PBKDF2 hashes, one pattern ACL), a real broker started from the shipped profile,
then one device added and one revoked with the fleet in place: CLI time, and time from the
SIGHUP until the new device connects / the revoked one is refused.

Dynamic security (2.0.11's plugin, for comparison): one role per device (its ACLs cannot say
``%u``) and one client, sent in batches over one MQTT connection to
``$CONTROL/dynamic-security/v1``, each batch waited for; the plugin rewrites its whole JSON
file after every command, so the cost grows with the square of the fleet: a smaller N is
measured and the step times show the trend. Bounded: ``--dynsec 0`` skips it, and it stops
after ``--dynsec-budget-s``.

    .venv/bin/python bench/provision.py [--devices 10000] [--dynsec 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devstack.servers import Mosquitto, find_binary, free_port

HEADER = "device_id,kind,region,lat,lon,capacity_l,fraction,site,report_interval_s\n"
DYNSEC = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731


def fleet_file(path: Path, n: int, start: int = 0) -> Path:
    rows = (
        f"bench-{i:06d},ecobox,almaty,43.2,76.9,240,plastic,residential,900\n"
        for i in range(start, start + n)
    )
    path.write_text(HEADER + "".join(rows))
    return path


def taza(*args: str) -> tuple[float, dict[str, Any]]:
    exe = Path(sys.executable).with_name("taza")
    t0 = time.perf_counter()
    out = subprocess.run(
        [str(exe), "devices", *args, "--json"], capture_output=True, text=True, timeout=600
    )
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"taza devices {args[0]} failed: {out.stderr}")
    doc: dict[str, Any] = json.loads(out.stdout)
    return elapsed, doc


def connack(broker: Mosquitto, user: str, password: str) -> int:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{user}", protocol=paho.MQTTv5)
    c.tls_set_context(ssl.create_default_context(cafile=str(broker.ca_file)))
    c.username_pw_set(user, password)
    got: queue.Queue[int] = queue.Queue()
    c.on_connect = lambda cl, u, f, rc, p: got.put(rc.value)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        return got.get(timeout=10)
    finally:
        c.disconnect()
        c.loop_stop()


def until(pred: Any, timeout: float = 30) -> float:
    t0 = time.perf_counter()
    while not pred():
        if time.perf_counter() - t0 > timeout:
            raise SystemExit("timed out")
        time.sleep(0.005)
    return time.perf_counter() - t0


def files(root: Path, n: int) -> dict[str, float]:
    root.mkdir(parents=True)
    broker_dir = root / "broker"
    t_add, doc = taza("add", "--fleet", str(fleet_file(root / "fleet.csv", n)),
                      "--account", "ingest.main", "--dir", str(broker_dir))  # fmt: skip
    assert len(doc["accounts"]) == n + 1
    taza("tls", "--host", "localhost", "--host", "127.0.0.1", "--dir", str(broker_dir))
    res = {"devices": n, "add_all_s": t_add}
    res["passwd_bytes"] = (broker_dir / "passwd").stat().st_size
    res["acl_bytes"] = (broker_dir / "acl").stat().st_size
    with Mosquitto(root / "mq", profile="production", broker_dir=broker_dir) as broker:
        pid_file = root / "mosquitto.pid"
        pid_file.write_text(str(broker.pid))
        grown = fleet_file(root / "fleet.csv", n + 1)
        t_one, doc = taza("add", f"bench-{n:06d}", "--fleet", str(grown),
                          "--dir", str(broker_dir), "--pid-file", str(pid_file))  # fmt: skip
        (new,) = doc["accounts"]
        t0 = time.perf_counter()
        until(lambda: connack(broker, new["username"], new["password"]) == 0)
        res["add_one_cli_s"] = t_one
        res["add_one_until_connect_s"] = time.perf_counter() - t0
        t_rev, _ = taza("revoke", new["username"], "--dir", str(broker_dir),
                        "--pid-file", str(pid_file))  # fmt: skip
        t0 = time.perf_counter()
        until(lambda: connack(broker, new["username"], new["password"]) != 0)
        res["revoke_one_cli_s"] = t_rev
        res["revoke_until_refused_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        broker.reload()
        res["sighup_reload_s"] = time.perf_counter() - t0
    return res


def dynsec(root: Path, n: int, batch: int, budget_s: float) -> dict[str, Any]:
    conf_json = root / "dynsec.json"
    subprocess.run(
        [find_binary("mosquitto_ctrl"), "dynsec", "init", str(conf_json), "admin", "adminpw"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    port = free_port()
    conf = root / "dynsec.conf"
    conf.write_text(
        f"per_listener_settings false\nlistener {port} 127.0.0.1\nallow_anonymous false\n"
        f"plugin {DYNSEC}\nplugin_opt_config_file {conf_json}\n"
        f"log_dest file {root / 'dynsec.log'}\n" + ("user root\n" if os.geteuid() == 0 else "")
    )
    proc = subprocess.Popen([find_binary("mosquitto"), "-c", str(conf)])
    try:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-admin", protocol=paho.MQTTv5)
        c.username_pw_set("admin", "adminpw")
        replies: queue.Queue[bytes] = queue.Queue()
        c.on_message = lambda cl, u, m: replies.put(m.payload)
        for _ in range(100):
            try:
                c.connect("127.0.0.1", port)
                break
            except OSError:
                time.sleep(0.05)
        c.loop_start()
        c.subscribe("$CONTROL/dynamic-security/v1/response", qos=1)
        time.sleep(0.3)
        steps: list[tuple[int, float]] = []
        done, t0 = 0, time.perf_counter()
        while done < n and time.perf_counter() - t0 < budget_s:
            cmds: list[dict[str, Any]] = []
            for i in range(done, min(n, done + batch)):
                user = f"bench-{i:06d}"
                cmds.append({"command": "createRole", "rolename": f"d-{user}", "acls": [
                    {"acltype": "publishClientSend", "topic": f"taza/v1/+/+/{user}/#",
                     "allow": True},
                    {"acltype": "subscribeLiteral", "topic": f"taza/v1/_feedback/{user}",
                     "allow": True},
                ]})  # fmt: skip
                cmds.append({"command": "createClient", "username": user, "password": "x" * 32,
                             "roles": [{"rolename": f"d-{user}"}]})  # fmt: skip
            c.publish("$CONTROL/dynamic-security/v1", json.dumps({"commands": cmds}), qos=1)
            reply = json.loads(replies.get(timeout=max(60.0, budget_s)))
            errors = [r for r in reply["responses"] if r.get("error")]
            if errors:
                raise SystemExit(f"dynsec refused: {errors[:2]}")
            done += len(cmds) // 2
            steps.append((done, time.perf_counter() - t0))
        c.disconnect()
        c.loop_stop()
        total = steps[-1][1] if steps else 0.0
        say(f"  dynsec: {done} clients+roles in {total:.1f} s")
        return {
            "devices": done,
            "seconds": total,
            "json_bytes": conf_json.stat().st_size,
            "steps": [
                {"devices": d, "seconds": round(s, 2)}
                for d, s in steps[:: max(1, len(steps) // 10)]
            ],
            "stopped_by_budget": done < n,
        }
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--dynsec", type=int, default=2000, help="devices for dynsec (0: skip)")
    ap.add_argument("--dynsec-batch", type=int, default=100, help="devices per control message")
    ap.add_argument("--dynsec-budget-s", type=float, default=120.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="taza-provision-") as tmp:
        root = Path(tmp)
        say(f"files: {args.devices} devices")
        result: dict[str, Any] = {"files": files(root / "files", args.devices)}
        if args.dynsec:
            (root / "dynsec").mkdir()
            say(f"dynsec: {args.dynsec} devices, {args.dynsec_batch} per message")
            result["dynsec"] = dynsec(
                root / "dynsec", args.dynsec, args.dynsec_batch, args.dynsec_budget_s
            )
    if args.json:
        print(json.dumps(result, indent=2))
        return
    f = result["files"]
    print(f"password/ACL files, {f['devices']} devices:")
    print(f"  taza devices add (all)        {f['add_all_s']:.2f} s")
    print(f"  passwd / acl                  {f['passwd_bytes']:,} / {f['acl_bytes']:,} bytes")
    print(f"  add one (CLI, fleet in place) {f['add_one_cli_s']:.2f} s; "
          f"SIGHUP → it connects {f['add_one_until_connect_s']:.3f} s")  # fmt: skip
    print(f"  revoke one (CLI)              {f['revoke_one_cli_s']:.2f} s; "
          f"SIGHUP → refused {f['revoke_until_refused_s']:.3f} s")  # fmt: skip
    print(f"  a SIGHUP reload alone         {f['sighup_reload_s']:.3f} s")
    if "dynsec" in result:
        d = result["dynsec"]
        hit = " (budget hit)" if d["stopped_by_budget"] else ""
        print(f"dynamic-security plugin: {d['devices']} devices in {d['seconds']:.1f} s"
              f" ({d['json_bytes']:,} bytes of JSON){hit}")  # fmt: skip
        for s in d["steps"]:
            print(f"  {s['devices']:>6} devices after {s['seconds']:7.2f} s")


if __name__ == "__main__":
    main()
