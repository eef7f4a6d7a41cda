"""Select the "pure StateGraph" tests and compare a stock run with an alto run.

usage: python compare.py LG_DIR STOCK.xml ALTO.xml ALTO_COUNTS.json [NAME=OTHER.xml ...] > table.md

LG_DIR is the langgraph package dir holding tests/ (the sdist, unpacked). ALTO.xml and
its counts are the main alto run (alto's default executor); each NAME=OTHER.xml adds
the outcome of another alto run (e.g. ``inline=alto_inline.xml``) as a column.
A top-level test is "pure StateGraph" when its source builds a StateGraph and does not
use a checkpointer (fixture or argument), interrupts, get_state/update_state, or the
functional API (@entrypoint/@task). The static selection is cross-checked with the
plugin's per-test counts (alto runs / fallbacks to stock).
"""

from __future__ import annotations

import ast
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter

FILES = [
    "tests/test_pregel.py",
    "tests/test_pregel_async.py",
    "tests/test_large_cases.py",
    "tests/test_large_cases_async.py",
    "tests/test_state.py",
    "tests/test_messages_state.py",
    "tests/test_runtime.py",
    "tests/test_retry.py",
]
CKPT_PARAMS = {"sync_checkpointer", "async_checkpointer", "checkpointer"}
PAT = {
    "stategraph": re.compile(r"\bStateGraph\b|\bMessageGraph\b"),
    "checkpointer": re.compile(
        r"checkpointer\s*=|InMemorySaver|MemorySaver\(|SqliteSaver|PostgresSaver"
    ),
    "interrupt": re.compile(
        r"\binterrupt\(|interrupt_before|interrupt_after|\bInterrupt\b|Command\(\s*resume|resume="
    ),
    "state_api": re.compile(
        r"\b(a?get_state|a?update_state|a?get_state_history|a?bulk_update_state)\b"
    ),
    "functional": re.compile(r"@entrypoint|@task\b|\bentrypoint\(|\btask\("),
}


def classify(lg_dir: str) -> dict[str, bool]:
    pure = {}
    for f in FILES:
        src = open(f"{lg_dir}/{f}").read()
        for node in ast.parse(src).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith(
                "test_"
            ):
                seg = ast.get_source_segment(src, node) or ""
                feats = {k: bool(p.search(seg)) for k, p in PAT.items()}
                feats["checkpointer"] |= bool({a.arg for a in node.args.args} & CKPT_PARAMS)
                pure[f"{f}::{node.name}"] = feats["stategraph"] and not (
                    feats["checkpointer"]
                    or feats["interrupt"]
                    or feats["state_api"]
                    or feats["functional"]
                )
    return pure


def results(path: str) -> dict[str, str]:
    out = {}
    for tc in ET.parse(path).getroot().iter("testcase"):
        nid = f"{tc.get('classname').replace('.', '/')}.py::{tc.get('name')}"
        st = "passed"
        for ch in tc:
            if ch.tag in ("failure", "error"):
                st = "failed"
                break
            if ch.tag == "skipped":
                st = "skipped"
        out[nid] = st
    return out


def main() -> None:
    lg_dir, stock_xml, alto_xml, counts_json = sys.argv[1:5]
    others = [arg.split("=", 1) for arg in sys.argv[5:]]
    other = [(name, results(path)) for name, path in others]
    pure = classify(lg_dir)
    stock, alto = results(stock_xml), results(alto_xml)
    counts = json.load(open(counts_json))
    base = lambda n: re.sub(r"\[.*\]$", "", n)  # noqa: E731
    rows = []
    for nid in sorted(set(stock) | set(alto)):
        c = counts.get(nid, {})
        ar, fb = c.get("alto_runs", 0), c.get("fallback_runs", 0)
        how = "alto" if ar and not fb else "mixed" if ar else "fallback" if fb else "no-run"
        rows.append(
            (
                nid,
                pure.get(base(nid), False),
                stock.get(nid, "missing"),
                alto.get(nid, "missing"),
                c.get("compiles", 0),
                ar,
                fb,
                how,
                *(res.get(nid, "missing") for _, res in other),
            )
        )
    sel = [r for r in rows if r[1]]
    print(
        f"pure StateGraph: {len({base(r[0]) for r in sel})} tests, {len(sel)} items; "
        f"stock pass {sum(r[2] == 'passed' for r in sel)}; "
        f"alto pass {sum(r[3] == 'passed' for r in sel)}; how they ran on alto: "
        f"{dict(Counter(r[7] for r in sel))}"
        + "".join(
            f"; {name} pass {sum(r[8 + i] == 'passed' for r in sel)}"
            for i, (name, _) in enumerate(other)
        )
        + "\n"
    )
    print(
        f"all items in the 8 files: {len(rows)}; stock pass "
        f"{sum(r[2] == 'passed' for r in rows)}; alto pass {sum(r[3] == 'passed' for r in rows)}"
        + "".join(
            f"; {name} pass {sum(r[8 + i] == 'passed' for r in rows)}"
            for i, (name, _) in enumerate(other)
        )
        + "\n"
    )
    head = ["test", "pure", "stock", "alto", "compiles", "alto runs", "fallbacks", "ran on"]
    head += [name for name, _ in other]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        # pure tests, and any test that passed on stock but failed on an alto run
        if r[1] or (r[2] == "passed" and any(x != "passed" for x in (r[3], *r[8:]))):
            print("| " + " | ".join(str(x) for x in r) + " |")


if __name__ == "__main__":
    main()
