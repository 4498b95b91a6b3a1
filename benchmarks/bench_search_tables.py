"""The printed tables of `bench_search` (from its result dict, the same one written as JSON)."""
from __future__ import annotations

from benchmarks.paired_stats import fmt_interval as fmt

METHODS = (("mcd", "SN+OD+MCD"), ("netadapt_v1", "NetAdapt V1"), ("uniform", "uniform (SN w.)"),
           ("random", "random (SN w.)"), ("scratch_uniform", "uniform, scratch"),
           ("scratch_searched", "searched, scratch"))
# How each headline metric prints: (label, scale, digits); top-1 and δ1 in points
METRIC_FORMAT = {"acc": ("top-1 %", 100, 1), "rmse": ("RMSE m", 1, 4), "delta1": ("δ1 %", 100, 1)}


def row(cells, widths) -> str:
    """Left-aligned first cell, the others right-aligned, two spaces between columns."""
    return "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths)))


def _score_format(result: dict) -> tuple[str, float, int]:
    """Score differences: top-1 / δ1 in points, -RMSE in m."""
    return ("points", 100, 1) if result["score_metric"] in ("top1", "delta1") else ("m of -RMSE", 1, 4)


def _resolution_label(result: dict) -> str:
    """What the 0.005 threshold of `resolves_0.5_points` is in the score's unit."""
    return "< 0.5 pt?" if result["score_metric"] in ("top1", "delta1") else "< 5 mm?"


def table_lines(result: dict) -> list[str]:
    lat = result["latency"]
    unit, scale = (("ms", 1.0) if lat["kind"] == "lut" else ("MMACs", 1e-6))
    s = result["settings"]
    S = result["summary"]
    headline = result["headline"]
    diff_unit, diff_scale, diff_digits = _score_format(result)
    lines = [f"NetAdaptV2 search benchmark at convergence: {result['space']} ({result['task']}), "
             f"{result['data']}, {s['seeds']} seed(s); mean ± 95 % t half-width over seeds; "
             f"torch threads {result['threads']['torch']}",
             f"training: OD super-network and plain max network, {s['epochs']} epochs each, seed 0, shared by "
             "every search seed (the spread is the searches' and fine-tunes')",
             f"constraint: {lat['note']}"]
    if lat.get("build"):
        lines.append(f"LUT built for this run in {lat['build']['time']['wall_s']:.0f}s (not charged to any method)")
    lines.append("")

    t = S["time"]
    lines.append(f"1. Time for {t['targets']} targets (training + searches), seconds")
    w = (13, 9, 12, 12, 12, 12)
    lines.append(row(("method", "train", "searches", "total", "total CPU", "mean score"), w))
    for key, name in (("sn_od_mcd", "SN+OD+MCD"), ("netadapt_v1", "NetAdapt V1")):
        r = t[key]
        lines.append(row((name, f"{r['train']['wall_s']:.0f}", fmt(r["search_wall_s"], 0), fmt(r["total_wall_s"], 0),
                          fmt(r["total_cpu_s"], 0), fmt(t["mean_score_after"][key], 3)), w))
    lines.append(f"V1 total / SN+OD+MCD total: {fmt(t['ratio_v1_over_sn']['wall'], 2)}x wall, "
                 f"{fmt(t['ratio_v1_over_sn']['cpu'], 2)}x CPU (goal >= 3x; paper 3.3x); mean score over targets "
                 f"after fine-tune, SN - V1: {fmt(t['mean_score_after']['difference'], diff_digits, diff_scale, True)} "
                 f"{diff_unit}")
    lines.append("")

    for index, target in enumerate(S["targets"]):
        lines.append(f"2.{index + 1} Target {target['fraction']:.0%} of the max network: "
                     f"{target['limit'] * scale:.4g} {unit}; val after the same fine-tune "
                     "(scratch: as trained, same epochs)")
        cols = [METRIC_FORMAT.get(k, (k, 1, 4)) for k in headline]
        w = (18, 13, 10, *(14,) * len(cols), 18)
        lines.append(row(("network", f"latency {unit}", "unused", *(c[0] for c in cols),
                          f"MCD - it ({diff_unit})"), w))
        for key, name in METHODS:
            m = target["methods"][key]
            diff = target["differences"].get(f"mcd_minus_{key}")
            lines.append(row((name, fmt(m["value"], 4, scale),
                              fmt(m["unused_budget"], 1, 100) + "%" if "unused_budget" in m else "",
                              *(fmt(m[f"val_{k}"], c[2], c[1]) for k, c in zip(headline, cols)),
                              fmt(diff, diff_digits, diff_scale, True) if diff else ""), w))
            if m.get("failed"):
                lines.append(f"  ({name} failed on {m['failed']} seed(s): see the JSON)")
        landed = target["methods"]["mcd"]["landed_all"]
        lines.append(f"MCD landed within 2 % of the target on every seed: {'yes' if landed else 'NO'}")
        lines.append("")

    ab = S.get("ablation")
    if ab:
        n = len(result["ablation"])
        L = s["layers"]
        lines.append(f"3. CBC on/off x L={L}/1 at {result['ablation'][0]['limit'] * scale:.4g} {unit}, landing on, "
                     f"{n} seed(s); score with super-network weights (BN recalibrated)")
        w = (20, 13, 9, 13, 13, 8, 12)
        lines.append(row(("variant", f"latency {unit}", "depth", "held-out", "val (SN w.)", "scored",
                          "out == in"), w))
        for key, name in (("nocbc_L1", "CBC off, L=1"), (f"nocbc_L{L}", f"CBC off, L={L}"),
                          ("cbc_L1", "CBC on, L=1"), (f"cbc_L{L}", f"CBC on, L={L}")):
            r = ab.get(key)
            if r is None:
                continue
            lines.append(row((name, fmt(r["value"], 4, scale), fmt(r["depth"], 2), fmt(r["holdout"], 4),
                              fmt(r["score_before"], 4), fmt(r["scored"], 0),
                              "yes" if r["whole_stream_all"] else "no"), w))
        w = (18, 22, 10, 22, 10)
        res_label = _resolution_label(result)
        lines.append(row(("gain (paired)", f"held-out ({diff_unit})", res_label, f"val SN w. ({diff_unit})",
                          res_label), w))
        for key, name in (("cbc_on_minus_off", "CBC on - off"), (f"L{L}_minus_L1", f"L={L} - L=1"),
                          ("both", "both")):
            g = ab["gains"][key]
            cells = []
            for part in ("holdout", "score_before"):
                res = g[part]["resolves_0.5_points"]
                cells += [fmt(g[part], diff_digits, diff_scale, True),
                          "-" if res is None else ("yes" if res else "no")]
            lines.append(row((name, *cells), w))
        lines.append(f"(\"{res_label}\": the 95 % half-width is under 0.5 points (score units x 0.005), so a gain "
                     "that size would be resolved; paper, ImageNet: CBC +0.3, MCD +0.4)")
        lines.append("")

    tp = result.get("throughput")
    if tp:
        lines.append("4. Throughput (this host)")
        if tp["lut"]:
            lines.append(f"LUT whole-network predictions: {tp['lut']['predictor_per_s']:,.0f}/s")
        lines.append(f"candidates scored: {tp['scoring']['candidates_per_s']:.2f}/s "
                     f"({tp['scoring']['holdout_images']} held-out images)")
        ips = tp["training_images_per_s"]
        lines.append(f"training: OD super-network {ips['od']:.0f} img/s, plain {ips['plain']:.0f} img/s")
        lines.append("")
    lines.append(f"wall time of this run: {result['wall_s']:.0f}s "
                 f"({result['wall_s_without_lut_build']:.0f}s without the LUT build)")
    return lines
