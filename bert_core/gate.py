"""The publishing gate: a rule over the candidate's and the published model's numbers, and its decision.

A rule is clauses joined by `and`, each naming a metric, its direction and the least change:

    finetune accuracy up by >= 0.5 points and masked-LM loss not worse
    masked-LM loss down by >= 0.01
    finetune accuracy not worse by more than 2 points and masked-LM accuracy not worse

Metrics: `masked-LM loss`, `masked-LM accuracy` (the pinned held-out masked-LM set, bert_core.heldout_eval;
both models scored in the same step) and `finetune <key>` (a key of the fine-tuned task's metrics.json,
e.g. `finetune accuracy`, `finetune f1`). A loss is better lower, anything else higher; `up`/`down`
must be the better direction. `points` are percentage points (0.5 points = 0.005 of an accuracy).
`not worse` is a change of at least 0 in the better direction; `not worse by more than X` allows X.

A clause whose metric the published version does not have in the same form (e.g. its fine-tuning task
data differ: `comparable` names why) is skipped, and says so; a rule whose clauses are all skipped
rejects. With nothing published, the first version passes.
"""

from __future__ import annotations

import dataclasses
import math
import re

from bert_core.errors import UserError

DEFAULT_RULE = "masked-LM loss not worse and finetune accuracy not worse by more than 2 points"

_ALIASES = {"masked-lm loss": "heldout.masked_lm_loss", "masked-lm accuracy": "heldout.masked_lm_accuracy",
            "mlm loss": "heldout.masked_lm_loss", "mlm accuracy": "heldout.masked_lm_accuracy"}
_CLAUSE = re.compile(
    r"^(?P<metric>.+?)\s+(?:(?P<dir>up|down)\s+by\s+(?:>=|at\s+least)\s*(?P<need>[0-9.eE+-]+)"
    r"|not\s+worse(?:\s+by\s+more\s+than\s+(?P<slack>[0-9.eE+-]+))?)(?:\s+(?P<points>points?))?$")


@dataclasses.dataclass(frozen=True)
class Clause:
    text: str
    key: str              # the metric's key in the numbers: heldout.masked_lm_loss, finetune.accuracy
    lower_is_better: bool
    least: float          # the least change in the better direction (negative: an allowed loss)

    def describe(self) -> str:
        return self.text


def metric_key(name: str) -> str:
    """`masked-LM loss` -> heldout.masked_lm_loss, `finetune accuracy` -> finetune.accuracy; a dotted
    key is itself."""
    low = " ".join(name.lower().split())
    if low in _ALIASES:
        return _ALIASES[low]
    if low.startswith("finetune "):
        return "finetune." + low.split(" ", 1)[1].replace(" ", "_")
    if re.fullmatch(r"(heldout|finetune)\.[a-z0-9_]+", low):
        return low
    raise UserError(f"gate rule: unknown metric {name!r}; expected masked-LM loss, masked-LM accuracy or "
                    f"finetune <key of the task's metrics.json> (e.g. finetune accuracy)")


def parse_rule(rule: str) -> list[Clause]:
    """The clauses of a rule; a clause that does not read is one line naming it and the form."""
    clauses = []
    for text in re.split(r"\s+and\s+", " ".join(str(rule).split())):
        m = _CLAUSE.match(text)
        if not m:
            raise UserError(f"gate rule: cannot read {text!r}; expected 'METRIC up|down by >= X [points]' or "
                            f"'METRIC not worse [by more than X [points]]', clauses joined by 'and'")
        key = metric_key(m["metric"])
        lower = key.endswith("loss") or key.endswith("error")
        try:
            amount = float(m["need"] if m["need"] is not None else (m["slack"] or 0))
        except ValueError:
            raise UserError(f"gate rule: {text!r}: {m['need'] or m['slack']!r} is not a number") from None
        if not math.isfinite(amount) or amount < 0:
            raise UserError(f"gate rule: {text!r}: the amount must be a number >= 0")
        if m["points"]:
            if lower:
                raise UserError(f"gate rule: {text!r}: points are for accuracies; give a loss's change as a number")
            amount /= 100.0
        if m["dir"] is not None and (m["dir"] == "down") != lower:
            better = "down" if lower else "up"
            raise UserError(f"gate rule: {text!r}: {m['metric']} is better {'lower' if lower else 'higher'}; "
                            f"say {better}")
        least = amount if m["dir"] is not None else -amount
        clauses.append(Clause(text, key, lower, least))
    return clauses


@dataclasses.dataclass
class Decision:
    passed: bool
    reason: str
    rows: list[dict]
    rule: str
    published_version: int | None

    def to_json(self) -> dict:
        return {"decision": "published" if self.passed else "rejected", "reason": self.reason, "rule": self.rule,
                "against_version": self.published_version, "clauses": self.rows}

    def markdown(self, candidate_label: str) -> str:
        against = f"v{self.published_version}" if self.published_version else "published"
        lines = [f"## Gate: {'PUBLISHED' if self.passed else 'REJECTED'} {candidate_label}", "",
                 f"Rule: `{self.rule}`", "", f"Reason: {self.reason}", "",
                 f"| metric | {against} | candidate | change | needed | ok |", "| --- | ---: | ---: | ---: | ---: | --- |"]
        for r in self.rows:
            lines.append(f"| {r['metric']} | {_num(r['published'])} | {_num(r['candidate'])} | {_num(r['change'])} "
                         f"| {_num(r['needed'])} | {r['status']} |")
        return "\n".join(lines) + "\n"


def _num(x) -> str:
    return "-" if x is None else f"{x + 0.0:.4f}"  # + 0.0: no "-0.0000"


def decide(rule: str, candidate: dict[str, float], published: dict[str, float] | None,
           published_version: int | None = None, comparable: dict[str, str] | None = None) -> Decision:
    """Apply `rule` to the candidate's numbers against the published version's (None: nothing
    published). `comparable`: {metric key prefix: why the published number is not comparable}."""
    clauses = parse_rule(rule)
    for c in clauses:
        if c.key not in candidate:
            raise UserError(f"gate rule: the candidate has no {c.key} (have: {', '.join(sorted(candidate))})")
    if published is None:
        rows = [{"metric": c.key, "candidate": candidate[c.key], "published": None, "change": None,
                 "needed": None, "status": "first"} for c in clauses]
        return Decision(True, "nothing published yet: the first version is published", rows, rule, None)
    rows, failed, skipped = [], [], []
    for c in clauses:
        why = next((v for k, v in (comparable or {}).items() if c.key.startswith(k)), None)
        cand, pub = candidate[c.key], published.get(c.key)
        if why is None and pub is None:
            why = f"v{published_version} has no {c.key}"
        if why is not None:
            rows.append({"metric": c.key, "candidate": cand, "published": pub, "change": None, "needed": c.least,
                         "status": f"skipped ({why})"})
            skipped.append(f"{c.text}: skipped ({why})")
            continue
        change = (pub - cand) if c.lower_is_better else (cand - pub)  # > 0: better
        ok = change >= c.least - 1e-12
        rows.append({"metric": c.key, "candidate": cand, "published": pub, "change": change, "needed": c.least,
                     "status": "ok" if ok else "FAIL"})
        if not ok:
            failed.append(f"{c.text}: {c.key} {pub:.4f} -> {cand:.4f} (change {change:+.4f} in the better "
                          f"direction, needed {c.least + 0.0:+.4f})")
    if failed:
        return Decision(False, "; ".join(failed), rows, rule, published_version)
    if len(skipped) == len(clauses):
        return Decision(False, "no clause could be compared: " + "; ".join(skipped), rows, rule, published_version)
    reason = f"better than v{published_version} by the rule" + (f" ({'; '.join(skipped)})" if skipped else "")
    return Decision(True, reason, rows, rule, published_version)
