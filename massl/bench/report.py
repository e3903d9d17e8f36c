"""The report: the two paths' measurements merged (speed-ups, FLOP rates against the ceiling,
loading against a step, the paper grid's cost), and its text form."""

from __future__ import annotations

from massl.bench.grid import grid_runs, paper_grid_hours


def merge_results(project: dict, reference: dict) -> dict:
    """The report: project steps beside the reference ones (speed-up = reference time / project
    time), FLOP rates against the ceiling, loading as a share of the lightest step."""
    ceiling = project["ceiling_gflops"]
    ref = {(s["scale"], s["strategy"]): s for s in reference["steps"]}
    steps = []
    for step in project["steps"]:
        other = ref.get((step["scale"], step["strategy"]))
        gflops = step["gflop_per_iteration"] / step["seconds_per_iteration"]
        steps.append({
            **step,
            "gflops": gflops,
            "fraction_of_ceiling": gflops / ceiling,
            "reference_seconds_per_iteration": other["seconds_per_iteration"] if other else None,
            "reference_gflop_per_iteration": other["gflop_per_iteration"] if other else None,
            "reference_peak_memory_mb": other["peak_memory_mb"] if other else None,
            "reference_round_seconds_per_iteration": other.get("round_seconds_per_iteration") if other else None,
            "speedup_vs_reference": other["seconds_per_iteration"] / step["seconds_per_iteration"] if other else None,
        })
    supervised = {s["scale"]: s["seconds_per_iteration"] for s in steps if s["strategy"] == "supervised"}
    loading = [{**row, "step_seconds": supervised.get(row["scale"]),
                "fraction_of_step": row["seconds_per_batch"] / supervised[row["scale"]]
                if row["scale"] in supervised else None}
               for row in project["loading"]]
    report = {"machine": project["machine"], "allocator": project["allocator"],
              "reference_allocator": reference["allocator"], "ceiling_gflops": ceiling, "steps": steps,
              "loading": loading, "inference": project["inference"]}
    report["paper_grid_hours"] = paper_grid_hours(steps, project["inference"]["seconds_per_window"])
    return report


def format_report(report: dict) -> str:
    m = report["machine"]
    lines = [(f"machine: {m['cpu']} ({m['cpu_cores']} cores), device {m['device']} ({m['device_name']}), "
              f"{m['torch_threads']} torch threads, torch {m['torch']}"),
             f"allocator: {report['allocator']} (reference: {report['reference_allocator']})",
             f"fp32 matmul ceiling: {report['ceiling_gflops']:.1f} GFLOP/s", "",
             (f"{'scale':<6} {'strategy':<12} {'s/it':>9} {'GFLOP/it':>9} {'GFLOP/s':>8} {'ceiling':>8} "
              f"{'peak MB':>8} {'ref s/it':>9} {'speed-up':>8}")]
    for s in report["steps"]:
        lines.append(f"{s['scale']:<6} {s['strategy']:<12} {s['seconds_per_iteration']:>9.4g} "
                     f"{s['gflop_per_iteration']:>9.4g} {s['gflops']:>8.1f} {100 * s['fraction_of_ceiling']:>7.1f}% "
                     f"{_num(s['peak_memory_mb'], '.0f'):>8} {_num(s['reference_seconds_per_iteration'], '.4g'):>9} "
                     f"{_num(s['speedup_vs_reference'], '.2f'):>7}x")
    lines.append("")
    for row in report["loading"]:
        lines.append(f"loading ({row['scale']}): {1000 * row['seconds_per_batch']:.2f} ms per augmented batch, "
                     f"{_num(_percent(row['fraction_of_step']), '.2f')} % of a supervised step")
    inf = report["inference"]
    extrapolated = f", extrapolated from {inf['windows_timed']}" if inf["extrapolated"] else ""
    lines.append(f"inference of one {'x'.join(map(str, inf['volume_shape']))} volume: {inf['seconds']:.1f} s "
                 f"({inf['windows']} windows of {'x'.join(map(str, inf['patch']))}, {inf['windows_per_batch']} per "
                 f"batch{extrapolated})")
    hours = report["paper_grid_hours"]
    trainings, autoencoders = grid_runs()
    lines.append(f"paper grid ({trainings} trainings + {autoencoders} autoencoders) on this device, one run at a time: "
                 f"{_num(hours, '.0f')} hours" + ("" if hours is not None else " (run without --quick)"))
    return "\n".join(lines)


def _num(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _percent(value):
    return None if value is None else 100 * value
