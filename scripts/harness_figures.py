#!/usr/bin/env python3
"""Folds the sweeps' JSON figure lines (and the canary line) from a test log into one JSON line."""
import json
import sys

sweeps, canaries = {}, {}
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    line = line.strip()
    if not line.startswith("{"):
        continue
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if "sweep" in d:
        sweeps[d.pop("sweep")] = d
    elif "canaries_planted" in d:
        canaries = d

def g(name, key):
    return sweeps.get(name, {}).get(key, 0)

crash = sweeps.get("crash", {})
out = {
    "harness": "midge",
    "workloads": g("crash", "workloads"),
    "crash_points_swept": g("crash", "crash_points") + g("component_crash_parity", "crash_points") + g("cloud_faults", "crash_points"),
    "crash_states_checked": g("crash", "states_checked") + g("component_crash_parity", "states_checked") + g("cloud_faults", "states_checked"),
    "crash_states_by_model": crash.get("by_model", {}),
    "recovery_crash_states": g("crash", "recovery_crash_states") + g("cloud_faults", "recovery_crash_states"),
    "violations": sum(d.get("violations", 0) for d in sweeps.values()),
    "io_errors_injected": g("io_error", "errors_injected"),
    "object_store_fault_plans": g("cloud_faults", "fault_plans"),
    "corruptions_detected": g("corruption", "detected") + g("component_corruption_flips", "detected"),
    "corruptions_silent": g("corruption", "silent"),
    "native_component_io_ops_compared": sum(g(n, "io_ops_compared") for n in sweeps),
    "native_component_divergences": sum(d.get("divergences", 0) for d in sweeps.values()),
    "canaries_planted": canaries.get("canaries_planted", 0),
    "canaries_caught": canaries.get("canaries_caught", 0),
}
print(json.dumps(out, separators=(",", ":")))
