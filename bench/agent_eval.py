"""Evaluate the agent's embedded understanding (no LLM) on the fixed simulator dataset: ≥150
questions and commands with expected answers computed independently (tests/agent/cases.py).

    python bench/agent_eval.py            # a summary per category
    python bench/agent_eval.py --json     # one JSON object (accuracy overall and per category)
    python bench/agent_eval.py --failures # also the questions it got wrong or declined
    python bench/agent_eval.py --set heldout --failures  # the held-out set (tests/agent/heldout.py)

``--set``: ``main`` (default) the 169 questions written beside the parser (tests/agent/cases.py),
``heldout`` the questions written without reading it (tests/agent/heldout.py), ``all`` both.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--failures", action="store_true")
    ap.add_argument("--set", choices=("main", "heldout", "all"), default="main", dest="which",
                    help="which evaluation set: main (tests/agent/cases.py), heldout (tests/agent/heldout.py) or all")
    args = ap.parse_args()
    from tests.agent.cases import cases, evaluate, load
    from tests.agent.dataset import build
    from tests.agent.heldout import heldout_cases

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        p = build(Path(tmp) / "data")
        try:
            built = time.perf_counter() - t0
            if args.which == "main":
                res = evaluate(p)
            else:
                d = load(p)
                cs = heldout_cases(d) if args.which == "heldout" else cases(d) + heldout_cases(d)
                res = evaluate(p, cs)
        finally:
            p.close()
    res["seconds"] = {"dataset": round(built, 1), "evaluation": round(time.perf_counter() - t0 - built, 1)}
    fails = [r for r in res.pop("results") if r["score"] != 1]
    if args.failures:
        res["failures"] = fails
    if args.json:
        print(json.dumps(res))
        return
    print(f"{res['questions']} questions: accuracy {res['accuracy']:.1%}, declined {res['declined']}, "
          f"wrong {res['wrong']}, score {res['score']:.3f}")
    for k, v in res["by_category"].items():
        print(f"  {k:<14} {v['questions']:>3}  {v['accuracy']:.1%}  wrong {v['wrong']}")
    for f in fails if args.failures else []:
        print(f"  [{f['score']:+d}] {f['category']}: {f['question']} → {f['outcome']} | {f['answer'][:160]}")


if __name__ == "__main__":
    main()
