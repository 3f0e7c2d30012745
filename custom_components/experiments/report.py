"""Aggregation of finished runs over seeds, the results page (markdown + JSON) and its figures."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from custom_components.metrics.stats import MIN_CASES, TOO_SMALL, format_interval, format_spread, interval_ok

from .environment import relative_path
from .methods import METHODS

__all__ = ["ReportError", "aggregate", "dice_vs_ratio_figure", "dice_vs_time_figure", "dice_vs_time_points",
           "format_console_table", "format_markdown_table", "qualitative_figure", "ratio_tag", "recommend",
           "recommendation_lines", "write_markdown"]


class ReportError(RuntimeError):
    """A metrics file that cannot be aggregated (unreadable, or of another protocol)."""


def ratio_tag(ratio: float) -> str:
    """``0.1 -> '0.1'``, ``1.0 -> '1'`` (the ``%g`` form used in split file names)."""
    return f"{float(ratio):g}"


def _base(row: Mapping[str, Any]) -> str:
    return str(row.get("base_method") or row["method"].split("_")[0])


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _mean_std(values: Sequence[Any]) -> dict[str, Any]:
    v = _finite(values)
    if not v:
        return {"mean": None, "std": None, "n": 0}
    m = sum(v) / len(v)
    return {"mean": m, "std": math.sqrt(sum((x - m) ** 2 for x in v) / len(v)), "n": len(v)}


def _group_of(summary: Mapping[str, Any]) -> str:
    groups = list(summary.get("metrics", {}))
    if not groups:
        raise ReportError("metrics.json summary has no 'metrics' entry.")
    return "mean" if "mean" in groups else groups[0]


def aggregate(runs: Sequence[Mapping[str, Any]], protocol: str) -> list[dict[str, Any]]:
    """Aggregate per (method, ratio) over seeds from each run's ``metrics.json`` under ``protocol``.

    Per-case values of every seed are pooled: Dice/Jaccard/HD95/ASD mean ± std (population std; NaN cases left out);
    ``seed_dice`` lists each seed's mean Dice; ``pooled_dice`` / ``pooled_jaccard`` are the means over seeds of the
    protocol's pooled scores (``None`` when the protocol does not pool). Cross-validation folds (runs with ``fold``)
    of one seed are one score: every labelled case once (``seed_dice``: the mean over the pooled cases of its
    folds; ``cv``: the number of folds); the pooled scores are then means over folds and seeds.

    Args:
        runs: run records with ``method``, ``ratio``, ``seed``, ``metrics`` (``{protocol: path of metrics.json}``),
            optional ``train_time_s``, ``selection`` (``{"network", "threshold", "dice"}``).
        protocol: protocol name.

    Returns:
        one row per (method, ratio), in first-seen order.
    """
    groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    bases: dict[str, str] = {}
    for r in runs:
        if protocol in (r.get("metrics") or {}):
            groups.setdefault((str(r["method"]), float(r["ratio"])), []).append(r)
            bases[str(r["method"])] = str(r.get("base_method") or r["method"])
    rows = []
    for (method, ratio), items in groups.items():
        cases: dict[str, list[Any]] = {m: [] for m in ("dice", "jaccard", "hd95", "asd")}
        class_dice: dict[str, list[Any]] = {}  # foreground class -> per-case Dice (multi-class only)
        seed_dice, pooled_d, pooled_j, unit, n_cases, case_dice = [], [], [], set(), 0, {}
        fold_dice: dict[int, list[Any]] = {}  # seed -> per-case Dice of its cross-validation folds
        for it in sorted(items, key=lambda x: (int(x["seed"]), int(x.get("fold") or 0))):
            path = Path(it["metrics"][protocol])
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ReportError(f"{path}: cannot read metrics ({e}).") from e
            if data.get("protocol") != protocol:
                raise ReportError(f"{path}: written under protocol {data.get('protocol')!r}, expected {protocol!r}.")
            summary = data["summary"]
            g = _group_of(summary)
            for m in cases:
                cases[m] += [row.get(f"{m}_{g}") for row in data["per_case"]]
            for i, row in enumerate(data["per_case"]):  # paired comparisons match (seed, case) across methods
                case_dice[f"{int(it['seed'])}/{row.get('case', i)}"] = row.get(f"dice_{g}")
            for c in (c for c in summary["metrics"] if c != "mean" and g == "mean"):
                class_dice.setdefault(c, []).extend(row.get(f"dice_{c}") for row in data["per_case"])
            if it.get("fold") is None:
                seed_dice.append(summary["metrics"][g]["dice"]["mean"])
            else:
                fold_dice.setdefault(int(it["seed"]), []).extend(row.get(f"dice_{g}") for row in data["per_case"])
            unit.add(summary.get("distance_unit", ""))
            n_cases += len(data["per_case"])
            pooled = summary.get("pooled") or {}
            if pooled:
                pooled_d.append(sum(_finite([p.get("dice") for p in pooled.values()])) / max(1, len(pooled)))
                pooled_j.append(sum(_finite([p.get("jaccard") for p in pooled.values()])) / max(1, len(pooled)))
        seed_dice += [_mean_std(v)["mean"] for _, v in sorted(fold_dice.items())]
        folds = sorted({int(it["num_folds"]) for it in items if it.get("num_folds")})
        times = _finite([it.get("train_time_s") for it in items])
        # the selection of each run, with the threshold chosen again under the test window where there is one
        sels = [{**it["selection"], **({"test_threshold": it["test_thresholds"][protocol]["threshold"]}
                                       if protocol in (it.get("test_thresholds") or {}) else {})}
                for it in items if it.get("selection")]
        rows.append({
            "method": method,
            "base_method": bases[method],
            "ratio": ratio,
            "protocol": protocol,
            "seeds": sorted({int(it["seed"]) for it in items}),
            "num_labeled": sorted({it.get("num_labeled") for it in items if it.get("num_labeled") is not None}),
            "num_test_cases": n_cases,
            **({"cv": folds[0]} if folds else {}),
            "distance_unit": ",".join(sorted(u for u in unit if u)),
            **{m: _mean_std(v) for m, v in cases.items()},
            "class_dice": {c: _mean_std(v) for c, v in class_dice.items()},
            "seed_dice": seed_dice,
            "case_dice": case_dice,
            "pooled_dice": (sum(pooled_d) / len(pooled_d)) if pooled_d else None,
            "pooled_jaccard": (sum(pooled_j) / len(pooled_j)) if pooled_j else None,
            "train_time_s": _mean_std(times),
            "selection": sels,
        })
    return rows


def _pct(stat: Mapping[str, Any]) -> str:
    return "n/a" if stat.get("mean") is None else f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def _num(stat: Mapping[str, Any]) -> str:
    return "n/a" if stat.get("mean") is None else f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def _ratio_label(row: Mapping[str, Any]) -> str:
    n = row.get("num_labeled") or []
    if row.get("cv"):
        return f"{row['cv']}-fold CV" + (f" ({'/'.join(str(x) for x in n)} labelled per fold)" if n else "")
    return f"{100 * row['ratio']:g} %" + (f" ({'/'.join(str(x) for x in n)})" if n else "")


def _selected(sel: Mapping[str, Any]) -> str:
    """``network @ threshold`` of a run's selection; ``(last checkpoint)`` when nothing was selected."""
    last = " (last checkpoint, no validation)" if sel.get("selection") == "last" else ""
    return f"{sel.get('network')} @ {float(sel.get('threshold', 0.5)):.2f}{last}"


def format_markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of aggregated rows (one protocol).

    Args:
        rows: rows from ``aggregate`` (same protocol).
    """
    if not rows:
        return "(no finished runs)\n"
    pooled = any(r.get("pooled_dice") is not None for r in rows)
    unit = rows[0].get("distance_unit") or "voxel"
    head = ["method", "labelled", "seeds", "test cases", "Dice (%)", "Jaccard (%)", f"HD95 ({unit})",
            f"ASD ({unit})"]
    if pooled:
        head += ["pooled Dice (%)", "pooled Jaccard (%)"]
    per_class = any(r.get("class_dice") for r in rows)
    if per_class:
        head += ["Dice per class (%)"]
    seen = {ref for r in rows for ref in (r.get("paired") or {})}  # compare_rows' references
    refs = [ref for ref in ("supervised", "cps", "cps_diffusion") if ref in seen]
    for r in rows:  # any further reference (ablation_table.py --references ... full) after those two
        refs += [ref for ref in (r.get("paired") or {}) if ref not in refs]
    head += ["Dice over seeds (%)", "gap closed"] + [f"Δ Dice vs {ref} [95 % CI] (%)" for ref in refs]
    head += ["selected network @ threshold", "train time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    order = list(METHODS)
    for r in sorted(rows, key=lambda x: (x["ratio"], order.index(_base(x)) if _base(x) in order else len(order),
                                         x["method"])):
        cells = [r["method"], _ratio_label(r), ",".join(str(s) for s in r["seeds"]), str(r["num_test_cases"]),
                 _pct(r["dice"]), _pct(r["jaccard"]), _num(r["hd95"]), _num(r["asd"])]
        if pooled:
            cells += ["n/a" if r.get("pooled_dice") is None else f"{100 * r['pooled_dice']:.2f}",
                      "n/a" if r.get("pooled_jaccard") is None else f"{100 * r['pooled_jaccard']:.2f}"]
        if per_class:
            cd = r.get("class_dice") or {}
            cells.append(", ".join(f"{c} " + ("n/a" if v.get("mean") is None else f"{100 * v['mean']:.1f}")
                                   for c, v in cd.items()) or "-")
        cells.append(format_spread(r.get("dice_over_seeds"), cases_per_seed(r)))
        gap = r.get("gap_closed")
        cells.append("-" if gap is None else f"{100 * gap:.0f} %")
        for ref in refs:
            cells.append(format_interval((r.get("paired") or {}).get(ref)))
        sels = r.get("selection") or []
        shown = [_selected(s) + (f" (test window: {float(s['test_threshold']):.2f})" if "test_threshold" in s else "")
                 for s in sels]
        cells.append(", ".join(dict.fromkeys(shown)) or "-")  # the folds of a seed: each distinct choice once
        t = r.get("train_time_s") or {}
        cells.append("n/a" if t.get("mean") is None else f"{t['mean']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cases_per_seed(row: Mapping[str, Any]) -> int:
    """Test cases behind each seed's score of an aggregated row (the fewest, over its seeds)."""
    per_seed: dict[str, int] = {}
    for k in row.get("case_dice") or {}:
        per_seed[k.split("/", 1)[0]] = per_seed.get(k.split("/", 1)[0], 0) + 1
    if per_seed:
        return min(per_seed.values())
    return int(row.get("num_test_cases") or 0) // max(1, len(row.get("seeds") or [1]))


def few_label_warnings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Warnings about the evidence itself: fewer than 3 labelled training cases, fewer than ``MIN_CASES`` test
    cases (no interval is printed then)."""
    out = []
    for r in rows:
        few = [n for n in r.get("num_labeled") or [] if n is not None and int(n) < 3]
        if few:
            out.append(f"{r['method']} at {_ratio_label(r)}: only {'/'.join(map(str, few))} labelled case(s) "
                       "trained (fewer than 3): its scores say little about the method.")
        n = cases_per_seed(r)
        if not interval_ok(n):
            remedy = ("every labelled case is already tested once: only more labelled cases give an interval"
                      if r.get("cv") else "use cross-validation (`run_experiments.py --cv`)")
            out.append(f"{r['method']} at {_ratio_label(r)}: {n} test case(s) per seed (fewer than {MIN_CASES}): "
                       f"no interval or spread is printed ({TOO_SMALL}); {remedy}.")
    return out


def headline(rows: Sequence[Mapping[str, Any]], reference: str = "supervised") -> str | None:
    """One sentence per protocol table: does each method beat ``reference`` at each labelled ratio?

    "beats" / "is below" when the paired 95 % interval of the per-case Dice difference excludes 0, "is within
    noise of" otherwise (``compare_rows``'s ``paired``); from fewer than ``MIN_CASES`` paired cases no verdict and
    no interval: "cannot be compared with ... (n too small)".

    Args:
        rows: rows of one protocol after ``compare_rows``.
        reference: the method compared with.

    Returns:
        the sentence, or ``None`` when no row has a paired comparison with ``reference``.
    """
    parts = []
    order = list(METHODS)
    for r in sorted(rows, key=lambda x: (x["ratio"], order.index(_base(x)) if _base(x) in order else len(order))):
        pb = (r.get("paired") or {}).get(reference) or {}
        if pb.get("mean_diff") is None:
            continue
        n = pb.get("n_cases", pb.get("n"))
        if not interval_ok(n) or pb.get("ci_low") is None:
            parts.append(f"{r['method']} cannot be compared with {reference} at {_ratio_label(r)} labelled "
                         f"({100 * pb['mean_diff']:+.1f} Dice points from n = {n} test case(s): "
                         f"{TOO_SMALL})")
            continue
        verdict = ("beats" if pb["ci_low"] > 0 else "is below" if pb["ci_high"] < 0 else "is within noise of")
        parts.append(f"{r['method']} {verdict} {reference} at {_ratio_label(r)} labelled "
                     f"({100 * pb['mean_diff']:+.1f} [{100 * pb['ci_low']:+.1f}, {100 * pb['ci_high']:+.1f}] Dice "
                     f"points, {len(r['seeds'])} seed(s))")
    return "; ".join(parts) + "." if parts else None


def recommend(rows: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]], cross_validated: bool
              ) -> dict[str, Any] | None:
    """The method to deliver: the best score among the compared methods, supervised-only included.

    After cross-validation the score is the cross-validated test Dice (``dice_over_seeds``: every labelled case
    scored once, by a model that never trained on it). With a test split it is the **validation** Dice of the runs'
    selected models (mean over seeds; ``model_selection.json``), so the test split never chooses: the test Dice and
    its paired interval are then reported for the chosen method only. Fixed-ratio methods (the upper bound) are no
    candidates; with several ratios, the largest one's rows are. Ties go to the method registered first
    (supervised-only before the others).

    Args:
        rows: one protocol's rows after ``compare_rows``.
        runs: the run records (their ``selection``).
        cross_validated: the rows come from cross-validation folds.

    Returns:
        ``{"method", "base_method", "ratio", "cross_validated", "basis", "score", "scores", "test_dice",
        "vs_supervised", "n_cases"}``, or ``None`` when no candidate has a score.
    """
    cands = [r for r in rows if getattr(METHODS.get(_base(r)), "fixed_ratio", None) is None]
    if not cands:
        return None
    ratio = max(float(r["ratio"]) for r in cands)
    cands = [r for r in cands if float(r["ratio"]) == ratio]
    scores: dict[str, float | None] = {}
    for r in cands:
        if cross_validated:
            scores[r["method"]] = (r.get("dice_over_seeds") or {}).get("mean")
        else:
            val = _finite([(it.get("selection") or {}).get("dice") for it in runs
                           if it["method"] == r["method"] and float(it["ratio"]) == ratio])
            scores[r["method"]] = sum(val) / len(val) if val else None
    ranked = [r for r in cands if scores[r["method"]] is not None]
    if not ranked:
        return None
    order = list(METHODS)
    best = max(ranked, key=lambda r: (scores[r["method"]], -(order.index(_base(r)) if _base(r) in order
                                                               else len(order))))
    n = cases_per_seed(best)
    basis = (f"cross-validated test Dice over all {n} labelled cases (each scored once by a model that did not "
             f"train on it; {best.get('cv')} folds)" if cross_validated else
             "validation Dice of the selected model (mean over seeds; the test split never chooses)")
    return {"method": best["method"], "base_method": _base(best), "ratio": ratio, "cross_validated": cross_validated,
            "basis": basis, "score": scores[best["method"]], "scores": scores,
            "test_dice": (best.get("dice") or {}).get("mean"), "n_cases": n,
            "vs_supervised": None if _base(best) == "supervised" else (best.get("paired") or {}).get("supervised")}


def recommendation_lines(rec: Mapping[str, Any] | None) -> list[str]:
    """The recommendation in words (results page and console), ending with the predict command."""
    if not rec:
        return []
    others = ", ".join(f"{m} {'n/a' if v is None else f'{100 * v:.2f}'}" for m, v in rec["scores"].items())
    if rec["base_method"] == "supervised":
        vs = "it is supervised-only (no semi-supervised method scored higher)"
    elif rec.get("vs_supervised") is None:
        vs = "no supervised-only run to compare with"
    else:
        vs = (f"Δ test Dice vs supervised-only {format_interval(rec['vs_supervised'])} (paired over the "
              f"{rec['n_cases']} test cases, 95 % bootstrap interval)")
    test = "" if rec["cross_validated"] or rec.get("test_dice") is None else \
        f"; its test Dice {100 * rec['test_dice']:.2f}"
    lines = [f"recommended model: **{rec['method']}**, best {rec['basis']}: {100 * rec['score']:.2f}{test}; {vs}.",
             f"scores of every method ({'cross-validated' if rec['cross_validated'] else 'validation'} Dice, %): "
             f"{others}."]
    if rec.get("how"):
        lines.append(f"delivered model: {rec['how']}" + (f", in `{relative_path(rec['delivered'])}`"
                                                          if rec.get("delivered") else "") + ".")
    if rec.get("predict_command"):
        lines.append(f"predict with it: {rec['predict_command']}")
    return lines


def format_console_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text version of the table for the console.

    Args:
        rows: rows from ``aggregate``.
    """
    md = format_markdown_table(rows).strip().splitlines()
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in md if not ln.startswith("|---")]
    if len(cells) < 2:
        return "\n".join(md)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    out = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def write_markdown(path: Path, dataset: str, tables: Mapping[str, Sequence[Mapping[str, Any]]],
                   env: Mapping[str, Any], command: str, settings: Mapping[str, Any],
                   runs: Sequence[Mapping[str, Any]], figures: Sequence[str] = (),
                   recommendation: Mapping[str, Any] | None = None) -> Path:
    """Write the results page of one dataset.

    Args:
        path: output ``.md`` file.
        dataset: dataset name.
        tables: ``{protocol: rows from aggregate}``.
        env: hardware and library versions (``environment_info``).
        command: the exact command that produced the results.
        settings: profile, methods, ratios, seeds, splits, overrides.
        runs: per-run records (wall times, selection).
        figures: file names of figures next to the page.
        recommendation: ``recommend``'s choice with ``Experiment.deliver``'s keys (a "Recommended model" section).
    """
    from custom_components.metrics import get_protocol

    lines = [f"# Results: {dataset}", "",
             "Generated by `scripts/run_experiments.py` (`custom_components.experiments`); every number below was "
             "measured by the command shown. "
             "Dice/Jaccard/HD95/ASD: mean ± std over the per-case values of all seeds' test cases (foreground; "
             "with more than one foreground class, the per-case mean over the foreground classes, and 'Dice per "
             "class' the per-case mean of each class over the cases where it is predicted or present; "
             "population std). Dice over seeds: mean over seeds of each seed's mean Dice ± its standard deviation "
             "across seeds (sample std). Gap closed: (method - supervised) / (upper - supervised) of the seed means. "
             "Δ Dice vs a reference: mean paired per-case difference (same seed, same test image) with a seeded "
             "percentile bootstrap 95 % interval (10000 resamples of the cases; `custom_components/metrics/stats.py`). "
             "Train time: wall time of all training phases of one run, mean over seeds "
             "(evaluation not included).", ""]
    verdicts = [(proto, headline(rows)) for proto, rows in tables.items()]
    if any(v for _, v in verdicts):
        lines += ["## In one line", ""]
        lines += [f"**Test Dice, protocol `{proto}`: {v}** (paired 95 % intervals over the test "
                  "cases)" for proto, v in verdicts if v]
        lines.append("")
    if recommendation:
        lines += ["## Recommended model", ""] + [f"- {ln}" for ln in recommendation_lines(recommendation)
                                                 if not ln.startswith("predict with it")]
        cmd = recommendation.get("predict_command")
        lines += ["", "```", cmd, "```", ""] if cmd else [""]
    evidence = [w for rows in tables.values() for w in few_label_warnings(rows)]
    if evidence:
        lines += ["## Warning: little evidence", ""] + [f"- {w}" for w in dict.fromkeys(evidence)] + [""]
    lines += ["## Command", "", "```", command, "```", ""]
    lines += ["## Setting", ""]
    for k, v in settings.items():
        lines.append(f"- {k}: `{json.dumps(v) if not isinstance(v, str) else v}`")
    lines += ["", "## Hardware and software", ""]
    for k, v in env.items():
        lines.append(f"- {k}: {v}")
    lines.append("")
    for proto, rows in tables.items():
        p = get_protocol(proto)
        lines += [f"## Test results, protocol `{proto}`", "", f"Protocol: {p.description}", "",
                  format_markdown_table(rows)]
    lines += ["## Runs", "", "| method | ratio | seed | train time (s) | eval time (s) | selected | folder |",
              "|---|---|---|---|---|---|---|"]
    for r in runs:
        sel = r.get("selection") or {}
        if sel.get("selection") == "last":
            seltxt = f"{_selected(sel)}, epoch {sel.get('epoch')}"
        else:
            seltxt = (f"{sel.get('network')} @ {float(sel.get('threshold', 0.5)):.2f} (val Dice "
                      f"{100 * float(sel.get('dice', float('nan'))):.2f}, epoch {sel.get('epoch')})") if sel else "-"
        for proto, cal in (r.get("test_thresholds") or {}).items():  # chosen again under the test window
            seltxt += (f"; `{proto}`: threshold {float(cal['threshold']):.2f} chosen again on validation with the "
                       f"test window (val Dice {100 * float(cal['dice']):.2f})")
        tt = r.get("train_time_s")
        et = r.get("eval_time_s")
        ttxt = "n/a" if tt is None else f"{tt:.0f}" + (" (resumed: last part only)"
                                                        if r.get("train_time_covers_resumed_part_only") else "")
        etxt = "n/a" if et is None else f"{et:.0f}"
        folder = relative_path(r["folder"]) if r.get("folder") else ""
        where = f"fold {r['fold']}/{r['num_folds']}" if r.get("fold") is not None else ratio_tag(r["ratio"])
        lines.append(f"| {r['method']} | {where} | {r['seed']} | {ttxt} | {etxt} | {seltxt} | `{folder}` |")
    lines.append("")
    warned = [(r, w) for r in runs for w in r.get("warnings", [])]
    if warned:
        lines += ["## Warnings", "", "Degenerate results (the figure and its baseline) and dataset warnings:", ""]
        lines += [f"- {r['method']} r{ratio_tag(r['ratio'])} s{r['seed']}: {w}" for r, w in warned]
        lines.append("")
    curves = [r for r in runs if ((r.get("selection") or {}).get("curve") or {}).get("dice")]
    if curves:
        marks = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
        lines += ["## Threshold sweep on validation", "",
                  "Validation Dice (%) of the selected network at a few thresholds of the 0.02-step sweep, at the "
                  "selected epoch; the chosen threshold is the best one (ties go to the threshold nearest 0.5). The "
                  "full curve is in each run's `models/model_selection.json`.", "",
                  "| method | ratio | seed | chosen | " + " | ".join(f"{m:g}" for m in marks) + " |",
                  "|" + "---|" * (4 + len(marks))]
        for r in curves:
            sel = r["selection"]
            thr, dice = sel["curve"]["thresholds"], sel["curve"]["dice"]
            at = [min(range(len(thr)), key=lambda i: abs(thr[i] - m)) for m in marks]
            lines.append(f"| {r['method']} | {ratio_tag(r['ratio'])} | {r['seed']} | {float(sel['threshold']):.2f} | "
                         + " | ".join(f"{100 * dice[i]:.1f}" for i in at) + " |")
        lines.append("")
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{f}]({f})" for f in figures]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def dice_vs_ratio_figure(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path | None:
    """Test Dice vs labelled ratio (%), the fully supervised runs at ratio 1.0 as a dashed line.

    Args:
        rows: rows from ``aggregate`` (one protocol).
        path: output ``.png``.
        title: figure title.

    Returns:
        ``path``, or ``None`` when no row has a Dice.
    """
    from custom_components.visualize import plot_dice_vs_ratio

    res: dict[str, dict[float, Any]] = {}
    upper = None
    for r in rows:
        if r["dice"]["mean"] is None:
            continue
        if METHODS.get(_base(r)) is not None and METHODS[_base(r)].fixed_ratio is not None:
            upper = 100 * r["dice"]["mean"]
            continue
        res.setdefault(r["method"], {})[100 * r["ratio"]] = {"mean": 100 * r["dice"]["mean"],
                                                             "std": 100 * r["dice"]["std"]}
    if not res:
        return None
    return plot_dice_vs_ratio(res, path, upper_bound={"fully supervised (upper)": upper} if upper is not None else None,
                              title=title)


def dice_vs_time_points(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One point per method and ratio: mean training wall time per run (s) and test Dice (%, mean over the test
    cases, ± the spread of the seeds' means); rows without a Dice or a positive training time are left out.

    Args:
        rows: rows from ``aggregate`` (one protocol).
    """
    out = []
    for r in rows:
        t = (r.get("train_time_s") or {}).get("mean")
        if r["dice"]["mean"] is None or t is None or not t > 0:
            continue
        spread = (r.get("dice_over_seeds") or {}).get("std") or 0.0
        out.append({"method": r["method"], "ratio": r["ratio"], "time_s": float(t), "dice": 100 * r["dice"]["mean"],
                    "dice_std": 100 * spread})
    return out


def dice_vs_time_figure(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path | None:
    """Test Dice against training wall time (:func:`dice_vs_time_points`), one point per method and ratio.

    Args:
        rows: rows from ``aggregate`` (one protocol).
        path: output ``.png``.
        title: figure title.

    Returns:
        ``path``, or ``None`` when no row has both a Dice and a training time.
    """
    from custom_components.visualize import plot_dice_vs_time

    points = dice_vs_time_points(rows)
    return plot_dice_vs_time(points, path, title=title) if points else None


def qualitative_figure(config_files: Sequence[Path], models_dir: Path, path: Path, num_cases: int,
                       selection: Mapping[str, Any] | None = None, protocol: str | None = None) -> Path | None:
    """Image, pseudo-label (trained teacher), prediction (deployable ``model.pt``), target for test cases.

    The cases go through the bundle's own validation preprocessing (``validate#preprocessing``) and inferer
    (``eval_inferer``), read with ``ConfigParser`` from the run's stacked config files, so the figure shows what
    the evaluation saw, in 2D and in 3D (a 3D case is shown by its middle slice along the last axis).

    Args:
        config_files: the cotrain run's stacked config files (``train.json`` first).
        models_dir: its ``models/`` folder (``teacher.pt``, ``model.pt``).
        path: output ``.png``.
        num_cases: test cases to show.
        selection: the run's ``model_selection.json`` content (for the column title).
        protocol: the first evaluation protocol; 3D cases are shown by three orthogonal slices through the target's
            centre (image, prediction, target, uncertainty), predicted with the ``la_uamt`` window for that protocol.

    Returns:
        ``path``, or ``None`` for ``num_cases < 1``.
    """
    import numpy as np
    import torch
    from monai.bundle import ConfigParser
    from monai.data import load_decathlon_datalist

    from custom_components.networks import load_teacher_weights
    from custom_components.transforms import ThresholdForeground
    from custom_components.visualize import qualitative_panel

    if num_cases < 1:
        return None
    parser = ConfigParser()
    parser.read_config([str(p) for p in config_files])
    parser["device"] = "$torch.device('cpu')"
    teacher = parser.get_parsed_content("network_def", instantiate=True)
    load_teacher_weights(teacher, models_dir / "teacher.pt")
    deploy = parser.get_parsed_content("deployable_def", instantiate=True)
    deploy.load_state_dict(torch.load(models_dir / "model.pt", map_location="cpu", weights_only=True))
    teacher.eval()
    deploy.eval()
    thr = float((selection or {}).get("threshold", 0.5))  # applied in post-processing, as in evaluate.json
    preprocessing = parser.get_parsed_content("validate#preprocessing", instantiate=True)
    inferer = parser.get_parsed_content("eval_inferer", instantiate=True)
    cases = load_decathlon_datalist(parser.get_parsed_content("datalist"), True, "test")[:num_cases]

    def shown(a: Any) -> Any:  # channel-first array -> 2D (middle slice of a volume)
        a = np.asarray(a)
        return a[..., a.shape[-1] // 2] if a.ndim == 4 else a

    if int(parser.get_parsed_content("spatial_dims")) == 3:
        uamt = "uamt_inferer" in parser and protocol == "la_uamt"
        return _orthogonal_figure(cases, preprocessing, parser.get_parsed_content(
            "uamt_inferer" if uamt else "eval_inferer", instantiate=True), deploy, thr, path, sel_title(selection),
            "la_uamt window" if uamt else "validation window")
    images, pseudo, pred, target, titles = [], [], [], [], []
    with torch.no_grad():
        for c in cases:
            d = preprocessing(dict(c))
            x = torch.as_tensor(d["image"]).float().unsqueeze(0)
            p_t = inferer(x, lambda t: teacher.predict(t)[0])
            p_d = inferer(x, deploy)
            images.append(shown(x[0]))
            pseudo.append(shown(p_t[0].argmax(0)))
            pred.append(shown(ThresholdForeground(thr)(p_d[0])[0].long()))  # the threshold of evaluate.json
            target.append(shown(torch.as_tensor(d["label"])[0]).round().astype(np.int64))
            titles.append(Path(str(c["image"])).name)
    cols = {"pseudo-label (teacher)": pseudo, f"prediction ({sel_title(selection)})": pred, "target": target}
    return qualitative_panel(images, cols, path, titles=titles)


def sel_title(selection: Mapping[str, Any] | None) -> str:
    """``model.pt: <network> @ <threshold>`` of a run's selection, for figure titles."""
    sel = selection or {}
    return f"model.pt: {sel.get('network', '?')} @ {float(sel.get('threshold', 0.5)):.2f}"


def _orthogonal_figure(cases: Sequence[Mapping[str, Any]], preprocessing: Any, inferer: Any, deploy: Any,
                       threshold: float, path: Path, model_title: str, window: str) -> Path:
    """3D cases as three orthogonal slices through the centre of the target (axial, coronal, sagittal rows):
    image, prediction (thresholded), target, uncertainty (normalised predictive entropy of the deployable's
    probabilities), on the grid the network sees (after the bundle's preprocessing, e.g. resampling)."""
    import numpy as np
    import torch

    from custom_components.transforms import PredictiveEntropy, ThresholdForeground
    from custom_components.visualize import orthogonal_slices, qualitative_panel

    images, pred, target, unc, titles = [], [], [], [], []
    with torch.no_grad():
        for c in cases:
            d = preprocessing(dict(c))
            x = torch.as_tensor(d["image"]).float().unsqueeze(0)
            probs = inferer(x, deploy)[0]
            lab = np.asarray(torch.as_tensor(d["label"])[0]).round().astype(np.int64)
            fg = np.argwhere(lab > 0)
            center = fg.mean(0).round().astype(int) if len(fg) else np.array(lab.shape) // 2
            p = np.asarray(ThresholdForeground(threshold)(probs)[0].long())
            e = np.asarray(PredictiveEntropy()(probs)[0], dtype=np.float32)
            name = Path(str(c["image"])).name.split(".")[0]
            for view, img, pv, lv, ev in zip(("axial", "coronal", "sagittal"), orthogonal_slices(x[0], center),
                                             orthogonal_slices(p, center), orthogonal_slices(lab, center),
                                             orthogonal_slices(e, center)):
                images.append(img)
                pred.append(pv)
                target.append(lv)
                unc.append(ev + 1e-3)  # a float map (never all integers): drawn as a heat map
                titles.append(f"{name[:10]} {view}")
    cols = {f"prediction ({model_title}, {window})": pred, "target": target, "uncertainty (entropy)": unc}
    return qualitative_panel(images, cols, path, titles=titles)
