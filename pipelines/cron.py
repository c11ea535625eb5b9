"""`bert-pipeline schedule`'s time flags: a KFP cron expression (`--cron`) and a period (`--interval`).

KFP schedules with robfig/cron: six fields, seconds first. Kubernetes CronJobs and crontab use five, minute
first, so a five-field expression is the likely mistake, and the error says how to write it for KFP.
"""

import re

from bert_core.errors import UserError

CRON_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31),
               ("month", 1, 12), ("day of week", 0, 6))
_NAMES = {4: {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())},
          5: {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}}
CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def validate_cron(expr: str) -> str:
    """Check a KFP cron expression (6 fields, seconds first); explain the 5-field mistake."""
    text = " ".join(expr.split())
    if text.lower() in CRON_DESCRIPTORS:
        return text.lower()
    if text.lower().startswith("@every"):
        raise UserError(f"--cron {expr!r}: for a fixed period use --interval (e.g. --interval 24h)")
    fields = text.split(" ")
    if len(fields) == 5:
        raise UserError(
            f"--cron {expr!r} has 5 fields (Kubernetes/crontab: minute hour day month weekday), but KFP's "
            f"cron has 6 with seconds first (second minute hour day month weekday): write "
            f"'0 {text}'")
    if len(fields) != 6:
        raise UserError(f"--cron {expr!r}: expected 6 fields (second minute hour day-of-month month "
                        f"day-of-week), got {len(fields)}")
    for index, (field, (label, low, high)) in enumerate(zip(fields, CRON_FIELDS)):
        for item in field.split(","):
            problem = _cron_item_problem(item, index, low, high)
            if problem:
                raise UserError(f"--cron {expr!r}: {label} field {field!r}: {problem}")
    return text


def _cron_item_problem(item: str, index: int, low: int, high: int) -> str | None:
    base, _, step = item.partition("/")
    if step and not (step.isdigit() and int(step) > 0):
        return f"step {step!r} is not a positive integer"
    if base in ("*",) or (base == "?" and index in (3, 5)):
        return None
    names = _NAMES.get(index, {})

    def number(text: str) -> int | None:
        if text.upper() in names:
            return names[text.upper()]
        return int(text) if text.isdigit() else None

    lo_text, _, hi_text = base.partition("-")
    lo, hi = number(lo_text), number(hi_text) if hi_text else None
    if lo is None or (hi_text and hi is None):
        return f"{item!r} is not a number, range, '*'" + (" or '?'" if index in (3, 5) else "")
    for value in (lo, hi):
        if value is not None and not low <= value <= high:
            return f"{value} is outside {low}-{high}"
    if hi is not None and hi < lo:
        return f"range {base!r} runs backwards"
    return None


_DURATION = re.compile(r"(\d+)\s*([smhd])")


def parse_interval(text: str) -> int:
    """'24h', '90m', '1h30m', '3600s', '2d' or plain seconds -> seconds."""
    compact = text.strip().lower().replace(" ", "")
    if compact.isdigit():
        seconds = int(compact)
    elif compact and _DURATION.sub("", compact) == "":
        seconds = sum(int(n) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in _DURATION.findall(compact))
    else:
        raise UserError(f"--interval {text!r}: expected a duration like 24h, 90m, 1h30m, 2d or seconds")
    if seconds <= 0:
        raise UserError(f"--interval {text!r}: must be longer than 0 seconds")
    return seconds
