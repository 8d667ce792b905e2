"""The provenance section: the command, configuration, seeds, versions, inputs and timings, and
what the time budget bought (predicted beside measured seconds of each stage).
"""

from __future__ import annotations

import shlex

from subnet.report.document import Section, Table
from subnet.report.formatting import _count, _seconds, _value


def _provenance_section(results) -> Section:
    config, inputs = results["config"], results["inputs"]
    seeds = [(key, _value(config[key])) for key in ("seed", "seeds") if key in config]
    seeds.append(("record seed", str(results["blog"]["record"]["seed"])))
    model = inputs["model"]
    timings = results["timings"]
    items = (
        Table("command", "Command", None, (
            ("command", shlex.join(results["command"]) or "—"),
            ("created", results["created"]),
            ("subnet", results["subnet_version"]),
        )),
        Table("config", "Configuration", ("option", "value"),
              tuple((key, _value(value)) for key, value in sorted(config.items()))),
        Table("seeds", "Seeds", None, tuple(seeds)),
        Table("versions", "Versions", ("package", "version"),
              tuple((k, "—" if v is None else v) for k, v in sorted(results["versions"].items()))),
        Table("inputs", "Inputs", None, (
            ("model file", model["path"]),
            ("model SHA-256", model["sha256"]),
            ("model file size", f"{_count(model['bytes'])} bytes"),
            ("dataset", inputs["dataset"]["name"]),
            ("dataset source", inputs["dataset"]["source"]),
            ("dataset fingerprint", inputs["dataset"]["fingerprint"]),
        )),
        Table("timings", "Timings", ("stage", "time"),
              tuple((stage, _seconds(seconds)) for stage, seconds in timings.items())
              + ((("total (sum of the stages)", _seconds(sum(timings.values()))),)
                 if "total" not in timings and len(timings) > 1 else ()), (False, True)),
    )
    if results.get("plan"):
        items += (_plan_table(results["plan"], timings),)
    return Section("provenance", "Provenance", items)


#: The stages a plan predicts, and the timings that measured them.
_PLANNED = (("keep", ("keep",)), ("record", ("record",)),
            ("selection and fine-tuning", ("selection", "finetune")),
            ("blog and uncertainty", ("rest",)))


def _plan_table(plan: dict, timings: dict) -> Table:
    """What the time budget bought: the measured costs, what it changed, and the predicted
    seconds of each stage beside the measured ones."""
    costs = plan["costs"]
    rows = [("time budget", f"{_seconds(plan['seconds'])} of stages"
             + ("" if plan["fits"] else " (the smallest settings predicted to exceed it)")),
            ("one masked evaluation", f"{costs['mask_example'] * 1e6:,.1f} µs"),
            ("building an engine", _seconds(costs["engine_build"])),
            ("one training example", f"{costs['train_example'] * 1e6:,.1f} µs")]
    for name, (asked, planned) in sorted(plan["changes"].items()):
        def shown(v):
            return f"{v:.3g}" if isinstance(v, float) else _value(v)

        rows.append((name.replace("_", " "), f"{shown(asked)} → {shown(planned)}"))
    measured = {"keep": ("keep",), "record": ("record",),
                "selection and fine-tuning": ("comparison",),
                "blog and uncertainty": ("blog", "uncertainty")}
    for label, parts in _PLANNED:
        predicted = sum(plan["predicted"].get(p, 0.0) for p in parts)
        took = [timings[t] for t in measured[label] if t in timings]
        rows.append((f"{label}: predicted / measured",
                     f"{_seconds(predicted)} / " + (_seconds(sum(took)) if took else "—")))
    return Table("plan", "What the time budget bought", None, tuple(rows), (False, True))
