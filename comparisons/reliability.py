"""The process runtime under crashes, stuck workers, attacks and a long soak.

    python comparisons/reliability.py [--kills 100] [--soak 20000] [--quick]

Five measurements (issue 13), each against a live app on worker processes, each with
its target:

* ``storm-retry``: ``--kills`` SIGKILLs of a stage's serving instances (two instances;
  one kill every 50 ms, of an instance that is up) while a client sends requests whose
  node has a ``RetryPolicy``: every request must be answered (target 100%). Restarts
  back off (up to 0.5 s), so the storm lasts longer than 100 x 50 ms.
* ``storm``: the same without a ``RetryPolicy``: requests fail with the kill's reason
  only, and the stage is never without a live instance for longer than 2 s (target),
  measured from the router's own view (``stats()``, polled every 5 ms).
* ``stuck``: an instance whose event loop blocks forever is replaced; the time from
  the call to its ``StageInstanceLost``, and to the next answer (target < 5 s).
* ``attacks``: while a client sends requests, strangers connect to the router of an
  app bound to every interface (tcp, 0.0.0.0) and of one on ipc (with no credentials,
  claiming an instance's or the app's identity, or with another deployment's
  credentials), and send pickled tasks that would create a file, READY messages posing
  as instances, malformed frames and control messages. Targets: 0 files created, 0
  requests failed or answered wrong.
* ``soak``: ``--soak`` requests through a worker stage; the app's RSS, open fds and
  threads, and the worker's RSS, sampled along the way. Target: RSS growth < 5% from
  the first sample (after warm-up) to the last.

Writes ``comparisons/results/reliability.json`` and ``reliability.png`` (the soak's
memory).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import operator
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import zmq
from langgraph.graph import START, StateGraph
from langgraph.types import RetryPolicy, Send
from typing_extensions import TypedDict

import alto_langgraph  # noqa: F401  (the backend)
from alto_langgraph.errors import StageInstanceLost
from alto_langgraph.process import security, wire
from alto_langgraph.process.worker import resident_mb

RESULTS = Path(__file__).parent / "results"


class Log(TypedDict):
    log: Annotated[list, operator.add]


def _work(p: dict) -> dict:
    return {"log": [p["i"] * 2]}


def fan_out(n: int = 4, **node: Any) -> StateGraph:
    g = StateGraph(Log)
    g.add_node("plan", lambda s: {"log": []})
    g.add_node("work", _work, **node)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", lambda s: [Send("work", {"i": i}) for i in range(n)])
    return g


EXPECTED = [0, 2, 4, 6]


def say(msg: str) -> None:
    print(msg, flush=True)


# -- kill storms ---------------------------------------------------------------------------


def storm(kills: int, retry: bool) -> dict[str, Any]:
    policy = RetryPolicy(max_attempts=100, initial_interval=0.01, jitter=False) if retry else None
    app = fan_out(retry_policy=policy).compile(
        backend="alto", executor="process", start="compile", replicas={"work": 2}
    )
    done = threading.Event()
    down: list[float] = []  # how long the stage had no live instance, each time
    kill_log: list[float] = []

    def watch() -> None:
        since = None
        while not done.is_set():
            live = app.deployment.stats()["live"]["work"]
            now = time.monotonic()
            if not live and since is None:
                since = now
            elif live and since is not None:
                down.append(now - since)
                since = None
            time.sleep(0.005)

    def killer() -> None:
        # a serving instance each time (one that said READY): killing a process that is
        # still starting would only measure the backoff
        for k in range(kills):
            while not (live := app.deployment.stats()["live"]["work"]):
                time.sleep(0.002)
            index = int(live[k % len(live)].rpartition("#")[2])
            try:
                os.kill(app.deployment.pids[("work", index)], signal.SIGKILL)
                kill_log.append(time.monotonic())
            except (KeyError, ProcessLookupError):  # it died meanwhile
                pass
            if k % 20 == 19:
                say(f"  {k + 1}/{kills} kills")
            time.sleep(0.05)
        time.sleep(1.5)  # let the last restarts finish
        done.set()

    threads = [threading.Thread(target=watch), threading.Thread(target=killer)]
    for t in threads:
        t.start()
    answered = wrong = 0
    failures: dict[str, int] = {}
    while not done.is_set():
        try:
            out = app.invoke({"log": []})
            answered += 1
            wrong += sorted(out["log"]) != EXPECTED
        except StageInstanceLost as exc:
            kind = "killed while running" if "killed by signal 9" in str(exc) else str(exc)
            failures[kind] = failures.get(kind, 0) + 1
    for t in threads:
        t.join()
    final_ok = sorted(app.invoke({"log": []})["log"]) == EXPECTED
    app.close()
    requests = answered + sum(failures.values())
    return {
        "kills": len(kill_log),
        "requests": requests,
        "answered": answered,
        "answered_pct": 100.0 * answered / max(1, requests),
        "wrong": wrong,
        "failures": failures,
        "stage_down_max_s": max(down, default=0.0),
        "stage_down_events": len(down),
        "serves_after": final_ok,
    }


# -- a stuck instance ----------------------------------------------------------------------


async def _blocks(s: dict) -> dict:
    if not s["log"]:
        time.sleep(3600)  # a blocking call in async code: the event loop stops
    return {"log": ["ok"]}


def stuck(rounds: int) -> dict[str, Any]:
    g = StateGraph(Log)
    g.add_node("work", _blocks)
    g.add_edge(START, "work")
    app = g.compile(backend="alto", executor="process", start="compile")
    to_error, to_answer = [], []
    for r in range(rounds):
        t0 = time.monotonic()
        try:
            asyncio.run(app.ainvoke({"log": []}))
            raise AssertionError("a blocked call returned")
        except StageInstanceLost as exc:
            assert "was stuck" in str(exc), exc
        to_error.append(time.monotonic() - t0)
        assert asyncio.run(app.ainvoke({"log": ["go"]}))["log"][-1] == "ok"
        to_answer.append(time.monotonic() - t0)
        say(
            f"  round {r + 1}/{rounds}: failed after {to_error[-1]:.2f} s, "
            f"served after {to_answer[-1]:.2f} s"
        )
    app.close()
    return {"rounds": rounds, "to_error_s": to_error, "to_next_answer_s": to_answer}


# -- attacks -------------------------------------------------------------------------------


class _Pwn:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def _attack_messages(marker: str) -> list[list[bytes]]:
    task = pickle.dumps(_Pwn(marker))
    return [
        [wire.envelope(wire.TASK, b"1", b"work"), task],
        [b"", wire.envelope(wire.READY, b"", b"work"), b""],
        [b"", wire.envelope(wire.FAILED), b"forged failure"],
        [wire.envelope(wire.CONTROL, b"", wire.CTL_DEAD, b"work#0"), b"forged"],
        [wire.envelope(wire.CONTROL, b"c", wire.CTL_STATS), b""],
        [b"\xff" * 1000],
        [b"T"],
        [b"", b"", b"", b"", b""],
    ]


def _attack(
    ctx: Any,
    addresses: list[str],
    marker: str,
    rounds: int,
    sent: list[int],
    stop: Any,
    forged: Any,
) -> None:
    """Connect as no one, as an instance's identity, as the app's, and with another
    deployment's credentials (``forged``: they reach the router's gatekeeper, which
    refuses them); send everything."""
    for _ in range(rounds):
        for address in addresses:
            for identity in (b"", b"work#0", b"app", b"forged"):
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                # a refused connection leaves the DEALER no peer, and a send to none
                # blocks: give up on it (what was not sent was refused)
                sock.setsockopt(zmq.SNDTIMEO, 100)
                if identity == b"forged":
                    forged.apply(sock)
                elif identity:
                    sock.setsockopt(zmq.IDENTITY, identity)
                sock.connect(address)
                for frames in _attack_messages(marker):
                    try:
                        sock.send_multipart(frames)
                    except zmq.Again:
                        break
                    sent[0] += 1
                time.sleep(0.005)
                sock.close()
    stop.set()


def attacks(rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for transport, host in (("tcp", "0.0.0.0"), ("ipc", "127.0.0.1")):
        marker = os.path.join(tempfile.mkdtemp(), "pwned")
        app = fan_out().compile(
            backend="alto", executor="process", start="compile", transport=transport, host=host
        )
        addresses = [a.replace("0.0.0.0", "127.0.0.1") for a in app.deployment._addresses]
        stop = threading.Event()
        ctx = zmq.Context()
        sent = [0]
        # another deployment's app credentials; on tcp with this router's public key,
        # which is no secret
        forged = security.Keyring(transport).peer(security.APP)
        if transport == "tcp":
            server_key = app.deployment._keyring.peer(security.APP).server_public
            forged = dataclasses.replace(forged, server_public=server_key)
        attacker = threading.Thread(
            target=_attack, args=(ctx, addresses, marker, rounds, sent, stop, forged)
        )
        attacker.start()
        answered = disturbed = 0
        while not stop.is_set():
            try:
                ok = sorted(app.invoke({"log": []})["log"]) == EXPECTED
                answered += ok
                disturbed += not ok
            except Exception:
                disturbed += 1
        attacker.join()
        ctx.destroy(linger=0)
        stats = app.deployment.stats()
        app.close()
        out[transport] = {
            "messages_sent": sent[0],
            "code_executed": os.path.exists(marker),
            "requests_answered": answered,
            "requests_disturbed": disturbed,
            "connections_refused": stats["refused"],
            "router_dropped": sum(stats["dropped"].values()),
        }
        say(f"  {transport}: {out[transport]}")
    return out


# -- soak ----------------------------------------------------------------------------------


def soak(requests: int) -> dict[str, Any]:
    app = fan_out().compile(backend="alto", executor="process", start="compile")
    worker = app.deployment.pids[("work", 0)]
    warmup = max(100, requests // 20)
    for _ in range(warmup):
        app.invoke({"log": []})
    samples = []
    every = max(1, requests // 40)
    t0 = time.monotonic()
    for i in range(requests + 1):
        if i % every == 0:
            samples.append(
                {
                    "request": i,
                    "app_rss_mb": resident_mb(),
                    "worker_rss_mb": resident_mb(worker),
                    "fds": len(os.listdir("/proc/self/fd")),
                    "threads": threading.active_count(),
                }
            )
            if i % (every * 10) == 0:
                say(f"  {i}/{requests} requests, app RSS {samples[-1]['app_rss_mb']:.1f} MiB")
        if i < requests:
            assert sorted(app.invoke({"log": []})["log"]) == EXPECTED
    took = time.monotonic() - t0
    app.close()
    first, last = samples[0], samples[-1]
    return {
        "requests": requests,
        "seconds": took,
        "app_rss_growth_pct": 100.0 * (last["app_rss_mb"] / first["app_rss_mb"] - 1),
        "worker_rss_growth_pct": 100.0 * (last["worker_rss_mb"] / first["worker_rss_mb"] - 1),
        "fds": [first["fds"], last["fds"]],
        "threads": [first["threads"], last["threads"]],
        "samples": samples,
    }


def plot(soaked: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [s["request"] for s in soaked["samples"]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(xs, [s["app_rss_mb"] for s in soaked["samples"]], label="app process")
    ax.plot(xs, [s["worker_rss_mb"] for s in soaked["samples"]], label="stage instance")
    ax.set_xlabel("requests")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{soaked['requests']} requests: app RSS {soaked['app_rss_growth_pct']:+.1f}%")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--soak", type=int, default=20000)
    parser.add_argument("--quick", action="store_true", help="20 kills, 2000 requests")
    args = parser.parse_args()
    kills, requests = (20, 2000) if args.quick else (args.kills, args.soak)
    results: dict[str, Any] = {}
    say(f"storm-retry: {kills} kills, requests with a RetryPolicy")
    results["storm_retry"] = storm(kills, retry=True)
    say(f"  {results['storm_retry']}")
    say(f"storm: {kills} kills, no RetryPolicy")
    results["storm"] = storm(kills, retry=False)
    say(f"  {results['storm']}")
    say("stuck: an instance whose event loop blocks")
    results["stuck"] = stuck(3)
    say("attacks: strangers at the router while requests run")
    results["attacks"] = attacks(10 if args.quick else 40)
    say(f"soak: {requests} requests")
    results["soak"] = soak(requests)
    s = results["soak"]
    say(
        f"  app RSS {s['app_rss_growth_pct']:+.2f}%, "
        f"worker RSS {s['worker_rss_growth_pct']:+.2f}%, "
        f"fds {s['fds']}, threads {s['threads']}, {s['seconds']:.0f} s"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reliability.json").write_text(json.dumps(results, indent=1))
    plot(results["soak"], RESULTS / "reliability.png")
    checks = {
        "every request answered under kills with a RetryPolicy": results["storm_retry"][
            "answered_pct"
        ]
        == 100.0,
        "no wrong answer under kills": results["storm"]["wrong"]
        == results["storm_retry"]["wrong"]
        == 0,
        "stage never down > 2 s": max(
            results["storm"]["stage_down_max_s"], results["storm_retry"]["stage_down_max_s"]
        )
        < 2.0,
        "stuck instance replaced < 5 s": max(results["stuck"]["to_next_answer_s"]) < 5.0,
        "attacks ran no code, disturbed no request": all(
            not a["code_executed"] and a["requests_disturbed"] == 0
            for a in results["attacks"].values()
        ),
        "soak RSS growth < 5%": s["app_rss_growth_pct"] < 5.0,
    }
    for what, ok in checks.items():
        say(f"{'PASS' if ok else 'FAIL'}  {what}")
    say(f"wrote {RESULTS / 'reliability.json'} and reliability.png")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
