"""The printed table (the JSON holds every number behind it)."""

from __future__ import annotations

from typing import Any


def _f(value: Any, fmt: str = ".1f") -> str:
    return "n/a" if value is None else format(value, fmt)


def format_table(r: dict[str, Any]) -> str:
    s, pk = r["setup"], r.get("peak", {})
    lines = [
        f"skinonnx benchmark: {s['cpu']}, {s['threads']} threads, torch {s['torch']}, onnxruntime {s['onnxruntime']}, "
        f"{s['allocator']}{' + GLIBC_TUNABLES' if s.get('glibc_tunables') else ''}, load average "
        f"{s['load_average_start'][0]:.1f} -> {s.get('load_average_end', [0])[0]:.1f}",
        f"weights: {'checkpoint ' + s['checkpoint'] if s['checkpoint'] else 'random init'}; images: {s['data']}",
        f"forward pass {pk.get('forward_gflop_per_image', 0):.2f} GFLOP/image at {s['image_size']}²; fp32 FMA peak "
        f"measured {_f(pk.get('fma_measured_gflops'))} GFLOP/s (documented {pk.get('documented_fma_gflops')}), "
        f"MKL SGEMM {_f(pk.get('sgemm_gflops'))}",
        f"forward limit = {pk.get('divisor')} {pk.get('divisor_gflops', 0):.0f} GFLOP/s ÷ GFLOP/image = "
        f"{pk.get('forward_limit_images_per_s', 0):.1f} images/s "
        f"(documented 199 GFLOP/s: {pk.get('documented_forward_limit_images_per_s', 0):.1f})",
        "",
    ]
    for batch, rows in r.get("inference", {}).items():
        lines.append(f"{'inference, batch ' + batch:<36} {'img/s':>7} {'× eager':>8} {'GFLOP/s':>8} "
                     f"{'% limit':>8} {'% 199':>6} {'spread':>7}")
        fp32 = rows.get("ONNX Runtime fp32", {}).get("images_per_s")
        for name, row in rows.items():
            extra = ""
            if "INT8" in name and fp32:
                extra = f"   INT8 ÷ ORT fp32 = {row['images_per_s'] / fp32:.2f}×"
            lines.append(f"  {name:<34} {row['images_per_s']:>7.2f} {row['ratio_to_eager']:>7.2f}× "
                         f"{row['gflops']:>8.1f} {row['fraction_of_limit']:>8.0%} "
                         f"{row['fraction_of_documented_limit']:>6.0%} {row['spread']:>7.0%}{extra}")
        lines.append("")
    if any("INT8" in name for rows in r.get("inference", {}).values() for name in rows):
        lines += ["INT8 rows: fp32-equivalent GFLOP/s; integer dot products are not bound by the fp32 FMA peak.", ""]
    gate = r.get("int8_gate")
    if gate:
        verdict = ("passed" if gate["ok"] else "FAILED") if gate["applies"] else "not applicable (random weights)"
        lines += [f"INT8 accuracy gate (>= {gate['min_agreement']:.0%} agreement, |ΔAUC| <= {gate['max_auc_change']}) "
                  f"on {gate['n_images']} {gate['split']} images: {verdict}; label agreement "
                  f"{gate['label_agreement']:.1%}, ROC-AUC {gate['auc_fp32']:.4f} -> {gate['auc_int8']:.4f}, mean |Δp| "
                  f"{gate['mean_prob_diff']:.4f}, fp32 median distance to threshold {gate['median_margin']:.4f}; "
                  f"calibrated on {gate['calibration_images']} training images in {gate['quantize_seconds']:.0f} s", ""]
    e2e = r.get("end_to_end", {})
    rows = {k: v for k, v in e2e.items() if isinstance(v, dict) and "fraction_of_model_only" in v}
    if rows:
        lines.append(f"{'end-to-end predict (decode+preprocess+ORT)':<44} {'images':>6} {'model img/s':>12} "
                     f"{'predict img/s':>14} {'fraction':>9}")
        for name, row in rows.items():
            lines.append(f"  {name:<42} {row['images']:>6} {row['model_only_images_per_s']:>12.2f} "
                         f"{row['end_to_end_images_per_s']:>14.2f} {row['fraction_of_model_only']:>9.0%}")
        lines.append("")
    if "draft" in e2e:
        d = e2e["draft"]
        lines += [f"JPEG draft mode, {d['source_size']} source (decoded at {d['draft_decoded_size']}): decode + "
                  f"preprocess {d['full_decode_ms']:.0f} ms -> {d['draft_decode_ms']:.0f} ms per image "
                  f"({d['speedup']:.1f}× faster)", ""]
    training = r.get("training")
    if training:
        title = f"training, batch {training['batch_size']}, {training['image_size']}px"
        lines.append(f"{title:<44} {'img/s':>7} {'× plain':>8} {'data time':>10}")
        for name, row in training["loops"].items():
            lines.append(f"  {name:<42} {row['images_per_s']:>7.2f} {row['ratio_to_plain']:>7.2f}× "
                         f"{row['data_time_fraction']:>10.1%}")
        lines.append("")
    phases = r.get("phases", {})
    if phases:
        per_phase = all(v.get("peak_is_per_phase") for v in phases.values())
        lines.append(f"peak RSS ({'per phase' if per_phase else 'whole process so far'}) and kernel share of CPU "
                     "time: " + ", ".join(f"{k} {v['peak_rss_mb']:.0f} MB / {v['kernel_cpu_share']:.0%}"
                                           for k, v in phases.items()))
    lines.append(f"total {s.get('seconds', 0):.0f} s")
    return "\n".join(lines)
