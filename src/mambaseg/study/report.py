"""Markdown report of a model comparison, written from the JSON-able result of
:func:`mambaseg.study.compare.compare_runs` (no numbers are computed here beyond formatting and wording).

Sections: provenance, runs, summary per class, efficiency, statistics, plots, "what the statistics do and do not
support" (generated from the results), conventions.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from ..evaluation.metrics import DISTANCE_METRICS
from .compare import MEAN_CLASS

__all__ = ["format_summary_table", "interpretation", "render_report", "write_report"]

_PROTOCOL_KEYS = ("models", "seeds", "folds", "budget", "split", "dataset", "model_kwargs", "git_commit", "versions",
                  "command", "started", "finished")


def _num(v: Any, metric: str = "") -> str:
    if v is None:
        return "n/a"
    return f"{v:.2f}" if metric in DISTANCE_METRICS else f"{v:.4f}"


def _p(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.2e}" if v < 1e-3 else f"{v:.4f}")


def _big(v: Any) -> str:
    if v is None:
        return "n/a"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{unit}"
    return f"{v:.3g}"


def _cls(name: str) -> str:
    return "mean over classes" if name == "mean_over_classes" else f"class {name}"


def _stat_classes(res: dict[str, Any]) -> list[str]:
    return list(res["tests"])


def format_summary_table(res: dict[str, Any], cls: str | None = None) -> str:
    """Markdown table of one class (default: the primary one): mean [CI], median, std, seed std, cases, seeds."""
    cls = res["primary_class"] if cls is None else cls
    level = round(100 * (1 - res["alpha"]))
    head = ["model", "runs", "seeds", "cases"] + [f"{m} mean [{level}% CI]" for m in res["metrics"]] + [
        f"{m} median / std / seed std" for m in res["metrics"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in res["models"]:
        s = res["summary"][model][cls]
        first = s[res["metrics"][0]]
        cells = [model, str(first["n_runs"]), str(first["n_seeds"]), str(first["n_cases"])]
        cells += [f"{_num(s[m]['mean'], m)} [{_num(s[m]['ci_low'], m)}, {_num(s[m]['ci_high'], m)}]"
                  for m in res["metrics"]]
        cells += [f"{_num(s[m]['median'], m)} / {_num(s[m]['std'], m)} / {_num(s[m]['seed_std'], m)}"
                  for m in res["metrics"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _empty_case_notes(res, cls)
    return "\n".join(lines)


def _empty_case_notes(res: dict[str, Any], cls: str) -> list[str]:
    """Lines that count the cases behind the means that are not plain values (DESIGN.md: aggregates say so)."""
    classes = [cls] if cls != MEAN_CLASS else sorted(
        {c for model in res["models"] for c in res["summary"][model] if c != MEAN_CLASS})
    out = []
    for key, what in (("n_nan", "Cases undefined in every seed and left out (e.g. Dice with both masks empty)"),
                      ("n_substituted", "Case-seed distances replaced by the image diagonal (a mask was empty: a "
                                        "miss counts as the worst distance)")):
        counts = [f"{model} {m}{'' if len(classes) == 1 else f' (class {c})'}: {res['summary'][model][c][m][key]}"
                  for model in res["models"] for c in classes for m in res["metrics"]
                  if res["summary"][model].get(c, {}).get(m, {}).get(key)]
        if counts:
            out.append(f"\n{what}: {'; '.join(counts)}.")
    return out


def _efficiency_table(res: dict[str, Any]) -> str:
    head = ["model", "params", "FLOPs (incl. scan)", "latency ms", "peak memory MB", "train time s", "iterations",
            "device", "runs measured"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in res["models"]:
        e = res["efficiency"][model]
        mem = _big(e["peak_memory_mb"])
        cells = [model, _big(e["params"]), _big(e["flops"]), _big(e["latency_ms"]), mem, _big(e["train_seconds"]),
                 _big(e["iterations"]), ", ".join(e["device"]) or "n/a", str(e["n_runs"])]
        lines.append("| " + " | ".join(cells) + " |")
    kinds = sorted({k for m in res["models"] for k in res["efficiency"][m]["memory_kind"]})
    if kinds:
        lines += ["", "Peak memory measured as: " + "; ".join(kinds) + "."]
    return "\n".join(lines)


def verdict(pair: dict[str, Any], alpha: float) -> str:
    """One pair's verdict in words (report tables and the CLI)."""
    if not pair["significant"]:
        return "not distinguishable"
    if not pair.get("mean_agrees", True):
        other = pair["model_b"] if pair["better"] == pair["model_a"] else pair["model_a"]
        return (f"significant at {alpha} after Holm, no single winner: the signed ranks favour {pair['better']}, "
                f"the mean difference favours {other}")
    return f"significant at {alpha} after Holm ({pair['better']} better)"


def _test_section(res: dict[str, Any], cls: str, metric: str) -> list[str]:
    t = res["tests"][cls][metric]
    level = round(100 * (1 - res["alpha"]))
    out = [f"#### {metric}, {_cls(cls)}", "",
           f"{t['n_common']} cases defined for every model ({t['n_dropped']} dropped: undefined or missing for at "
           f"least one model); {'higher' if t['higher_is_better'] else 'lower'} is better."
           + (f" **n < {res['small_n']}: the tests have little power.**" if t["n_common"] < res["small_n"] else "")]
    if t["note"]:
        return out + ["", f"No test: {t['note']}.", ""]
    fr = t["friedman"]
    if fr:
        ranks = ", ".join(f"{m} {r:.2f}" for m, r in sorted(fr["average_ranks"].items(), key=lambda kv: kv[1]))
        out.append(f"Friedman chi2 = {_num(fr['statistic'])}, p = {_p(fr['pvalue'])} "
                   f"({'rejects' if fr['significant'] else 'does not reject'} equal performance at {res['alpha']}). "
                   f"Average ranks (1 = best): {ranks}; Nemenyi CD = {fr['nemenyi_cd']:.3f}.")
    out += ["", f"| A | B | n | mean diff A-B [{level}% CI] | median diff | Wilcoxon p | p Holm | verdict |",
            "|---|---|---|---|---|---|---|---|"]
    for p in t["pairs"]:
        out.append(f"| {p['model_a']} | {p['model_b']} | {p['n']} | {_num(p['mean_diff'], metric)} "
                   f"[{_num(p['ci_low'], metric)}, {_num(p['ci_high'], metric)}] | {_num(p['median_diff'], metric)} "
                   f"| {_p(p['pvalue'])} | {_p(p['pvalue_holm'])} | {verdict(p, res['alpha'])} |")
    return out + [""]


def interpretation(res: dict[str, Any]) -> list[str]:
    """Plain-language bullets on what the results support, generated from them."""
    alpha, cls, metric = res["alpha"], res["primary_class"], res["primary_metric"]
    t = res["tests"][cls][metric]
    out = [f"- Primary comparison: {metric}, {_cls(cls)}. Other metrics and classes are secondary: no correction "
           "is made across them, so a lone significant result there is weaker evidence."]
    if t["note"]:
        out.append(f"- No paired test was possible ({t['note']}); the summary table describes the runs only.")
    else:
        n = t["n_common"]
        for p in t["pairs"]:
            a, b, sign = (p["model_a"], p["model_b"], 1) if p["better"] == p["model_a"] else (
                p["model_b"], p["model_a"], -1)
            lo, hi = sorted((sign * p["ci_low"], sign * p["ci_high"]))
            d = (f"mean difference {a} - {b} = {_num(sign * p['mean_diff'], metric)} [{_num(lo, metric)}, "
                 f"{_num(hi, metric)}], p Holm = {_p(p['pvalue_holm'])}")
            if p["significant"] and not p.get("mean_agrees", True):
                blo, bhi = sorted((-sign * p["ci_low"], -sign * p["ci_high"]))
                out.append(f"- {a} and {b} differ on {metric} (Wilcoxon, p Holm = {_p(p['pvalue_holm'])}), but not "
                           f"in one direction: the signed ranks favour {a} (most cases), while the mean difference "
                           f"{b} - {a} = {_num(-sign * p['mean_diff'], metric)} [{_num(blo, metric)}, "
                           f"{_num(bhi, metric)}] favours {b} (a few large differences). Neither is better overall; "
                           f"look at the per-case plot before choosing.")
                continue
            if p["significant"]:
                out.append(f"- {a} is better than {b} on {metric} ({d}): significant at {alpha} after Holm. "
                           "Whether a difference of this size matters in practice is not a statistical question.")
                continue
            out.append(f"- {a} and {b} are not distinguishable on {metric} ({d}). This is not evidence that they "
                       "are equivalent.")
            if (p["ci_low"] > 0 or p["ci_high"] < 0) and n >= 10:
                out.append(f"  The unadjusted CI excludes 0 but the Holm-corrected test does not reject: at most a "
                           f"hint that {a} is better, to be checked on more cases or seeds.")
        if t["friedman"] and not t["friedman"]["significant"]:
            out.append(f"- The Friedman test does not reject equal performance at {alpha}, so no pairwise "
                       "difference is claimed, whatever the individual p-values.")
        if n < res["small_n"]:
            out.append(f"- Only {n} paired cases: the tests have little power (n < {res['small_n']}); real "
                       "differences of a few Dice points can easily go undetected.")
            if n < 10:
                out.append(f"- With {n} cases the percentile bootstrap has few distinct resamples: its CIs are too "
                           "narrow and should not be read as evidence.")
            if n <= 5:
                out.append(f"- With {n} cases the smallest possible two-sided Wilcoxon p-value is "
                           f"{2 / 2 ** n:.3f}: a significant result at {alpha} is impossible.")
        if t["n_dropped"]:
            out.append(f"- {t['n_dropped']} case(s) were left out of the paired tests because a model had no "
                       "defined value (e.g. both masks empty) or did not evaluate them.")
    seeds = {m: res["summary"][m][cls][metric]["n_seeds"] for m in res["models"]}
    few = [m for m, s in seeds.items() if s < 3]
    if few:
        out.append(f"- Fewer than 3 seeds for {', '.join(few)}: seed-to-seed variation is poorly estimated, and a "
                   "difference may not survive other seeds.")
    flips = _ranking_flips(res)
    if flips:
        out.append(f"- The ranking on {metric} changes between seeds ({flips}); treat the order as unstable.")
    if res["unfinished"]:
        out.append(f"- {len(res['unfinished'])} unfinished run(s) were excluded (listed above); the comparison "
                   "covers finished runs only.")
    devices = {d for m in res["models"] for d in res["efficiency"][m]["device"]}
    if len(devices) > 1:
        out.append(f"- Efficiency was measured on different devices ({', '.join(sorted(devices))}): latency and "
                   "memory are not comparable across them.")
    iters = {res["efficiency"][m]["iterations"] for m in res["models"] if res["efficiency"][m]["iterations"]}
    if len(iters) > 1:
        out.append("- The models were trained for different numbers of iterations: the budget was not equal.")
    out.append("- All statements hold for this dataset, split and training budget; they say nothing about other "
               "datasets, and a different budget can change the order (nnU-Net Revisited, Isensee et al. 2024).")
    return out


def _ranking_flips(res: dict[str, Any]) -> str:
    cls, metric = res["primary_class"], res["primary_metric"]
    higher = metric not in DISTANCE_METRICS
    per_seed: dict[str, dict[str, float]] = {}
    for m in res["models"]:
        for seed, v in res["summary"][m][cls][metric]["per_seed_mean"].items():
            if v is not None:
                per_seed.setdefault(seed, {})[m] = v
    orders = {s: tuple(sorted(v, key=lambda m: -v[m] if higher else v[m])) for s, v in per_seed.items()
              if len(v) == len(res["models"])}
    if len(set(orders.values())) <= 1:
        return ""
    return "; ".join(f"seed {s}: {' > '.join(o)}" for s, o in orders.items())


def _provenance(res: dict[str, Any]) -> list[str]:
    out = [f"- Command: `{res['command']}`" if res["command"] else "- Command: (called from Python)",
           f"- mambaseg {res['mambaseg_version']}, report written "
           f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}",
           f"- Inputs: {', '.join(f'`{p}`' for p in res['inputs'])}"]
    prov = res["provenance"]
    for b in prov["benchmarks"]:
        out.append(f"- Benchmark `{b['path']}`:")
        bench = b["benchmark"] or {}
        if not bench:
            out.append("  - no benchmark.json")
        protocol = bench.get("protocol") if isinstance(bench.get("protocol"), dict) else {}
        for key, value in [*protocol.items(), *((k, bench[k]) for k in _PROTOCOL_KEYS if k in bench)]:
            out.append(f"  - {key}: `{json.dumps(value)}`")
        env = bench.get("environment") if isinstance(bench.get("environment"), dict) else {}
        if env:
            out.append("  - environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if v is not None))
        commands = [c.get("command") for c in bench.get("calls", []) if isinstance(c, dict) and c.get("command")]
        out += [f"  - benchmark call: `{c}`" for c in commands]
        split = b["split"] or {}
        if isinstance(split.get("splits"), list):
            sizes = [{k: len(v) for k, v in f.items() if isinstance(v, list)} for f in split["splits"]
                     if isinstance(f, dict)]
            out.append(f"  - split.json ({split.get('rule', 'rule not recorded')}, seed {split.get('seed')}): "
                       f"{sizes}")
        elif split:
            out.append(f"  - split.json: {({k: len(v) for k, v in split.items() if isinstance(v, list)})}")
    commits = prov["git_commits"]
    if commits:
        out.append(f"- git commits of the runs (environment.json): {commits}"
                   + (" **(differ between runs)**" if len(commits) > 1 else ""))
    if prov["mambaseg_versions"]:
        out.append(f"- mambaseg versions of the runs: {prov['mambaseg_versions']}")
    return out


def render_report(res: dict[str, Any]) -> str:
    """The whole report as markdown."""
    lines = ["# Model comparison", ""]
    if res.get("reproduce"):
        lines += [f"Reproduce the whole study (training included) with: `{res['reproduce']}`", ""]
    lines += ["## Provenance", "", *_provenance(res), "", "## Runs", ""]
    by_model: dict[str, list[str]] = {}
    for r in res["runs"]:
        by_model.setdefault(r["model"], []).append(f"seed {r['seed']} fold {r['fold']}")
    lines += [f"- {m}: {len(v)} finished run(s) ({'; '.join(v)})" for m, v in by_model.items()]
    if res["unfinished"]:
        lines += ["", f"Unfinished runs (**not used**): {len(res['unfinished'])}", ""]
        lines += [f"- {r['model']} seed {r['seed']} fold {r['fold']}: {r['reason']} (`{r['path']}`)"
                  for r in res["unfinished"]]
    level = round(100 * (1 - res["alpha"]))
    lines += ["", "## Summary", "",
              f"Per-case values averaged over seeds (the case is the unit), then mean, {level}% percentile bootstrap "
              f"CI of the mean ({res['n_boot']} resamples), median, std over cases and std over seeds of the "
              "per-seed mean. Mean Dice is the per-image mean, not pooled Dice.", ""]
    for cls in _stat_classes(res):
        lines += [f"### {_cls(cls)}", "", format_summary_table(res, cls), ""]
    lines += ["## Efficiency", "", "Mean over each model's finished runs (efficiency.json). FLOPs count the selective "
              "scan (9 B D L N per call).", "", _efficiency_table(res), "", "## Statistics", "",
              "Paired Wilcoxon signed-rank on seed-averaged per-case values (differences rounded to 1e-6, exact or "
              "permutation p-values for small n) with a paired bootstrap CI of the mean difference; with >= 3 models "
              "Friedman first, then Holm-corrected pairwise tests.", ""]
    for cls in _stat_classes(res):
        for metric in res["metrics"]:
            lines += _test_section(res, cls, metric)
    lines += ["## Plots", ""]
    for name, caption in (("dice_box", f"Per-case {res['score_metric']}"), ("pareto_flops", "Pareto: FLOPs"),
                          ("pareto_latency", "Pareto: latency"), ("cd_diagram", "Critical-difference diagram")):
        img = res["images"].get(name)
        if img:
            lines += [f"![{caption}]({img})", ""]
        elif name in res["images"]:
            lines += [f"- {caption}: not drawn ({res['images'].get(name + '_note')})", ""]
    tolerances = {k: n for k, n in res["provenance"].get("nsd_tolerance_mm", {}).items() if k != "None"}
    lines += ["## What the statistics do and do not support", "", *interpretation(res), "", "## Conventions", "",
              res["conventions"], ""]
    if tolerances:
        lines += ["NSD tolerance of these runs: " + ", ".join(f"{k} mm ({n} run(s))" for k, n in tolerances.items())
                  + ".", ""]
    return "\n".join(lines)


def write_report(path: Path, res: dict[str, Any]) -> None:
    """Write :func:`render_report` to ``path``."""
    Path(path).write_text(render_report(res))
