#!/usr/bin/env python3
"""Helpers for scripts/gpu-check.sh, in plain Python + numpy (all a GPU machine without
internet can be assumed to have).

  gpu_check.py parity --golden DIR --results FILE [--score-tol 0.02]
      Compares `segserve predict` JSON Lines with Ultralytics' reference outputs, as
      tests/parity.rs does (greedy matching by class and box IoU >= 0.5; precision and
      recall >= 0.95, mean box IoU >= 0.98, mean mask IoU >= 0.95), with the score
      tolerance given (a GPU's kernels round differently from the CPU's). Exit 1 on failure.

  gpu_check.py report --work DIR
      Prints the floor, load and memory tables from the files gpu-check.sh left in DIR.

  gpu_check.py follow < loadgen-output
      Prints a short line per load level as it finishes.
"""

import argparse
import glob
import json
import os
import sys

import numpy as np


# ---- parity ---------------------------------------------------------------------------

def rle_counts(s):
    """COCO compressed RLE counts (pycocotools' rleFrString), as a list of run lengths."""
    counts, p = [], 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_decode(mask):
    """{size: [h, w], counts} -> bool array [h, w] (runs are column-major, 0s first)."""
    h, w = mask["size"]
    counts = np.asarray(rle_counts(mask["counts"]), dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE covers {counts.sum()} pixels, not {h}x{w}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(w, h).T


def box_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mask_iou(a, b):
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def parity(args):
    ours_by_photo = {}
    with open(args.results) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                ours_by_photo[os.path.basename(r["path"])] = r
    golden_files = sorted(glob.glob(os.path.join(args.golden, "*.json")))
    if not golden_files:
        sys.exit(f"no golden files in {args.golden}")
    st = dict(ours=0, golden=0, matched=0, box=0.0, mask=0.0, masks=0, score=0.0)
    problems = []
    for gf in golden_files:
        photo = os.path.basename(gf)[: -len(".json")]
        gold = json.load(open(gf))
        ours = ours_by_photo.get(photo)
        if ours is None:
            problems.append(f"{photo}: no result from segserve")
            st["golden"] += len(gold["detections"])
            continue
        if (ours["image"]["width"], ours["image"]["height"]) != (
            gold["image"]["width"], gold["image"]["height"]):
            problems.append(f"{photo}: image size {ours['image']} != {gold['image']}")
        od, gd = ours["detections"], gold["detections"]
        st["ours"] += len(od)
        st["golden"] += len(gd)
        used = [False] * len(od)
        for g in gd:
            best, best_iou = None, 0.5
            for i, o in enumerate(od):
                if used[i] or o["class_id"] != g["class_id"]:
                    continue
                iou = box_iou(o["box"], g["box"])
                if iou >= best_iou:
                    best, best_iou = i, iou
            if best is None:
                problems.append(f"{photo}: unmatched golden {g['class_name']} {g['score']:.3f}")
                continue
            used[best] = True
            o = od[best]
            st["matched"] += 1
            st["box"] += best_iou
            st["score"] = max(st["score"], abs(o["score"] - g["score"]))
            if ("mask" in o) != ("mask" in g):
                problems.append(f"{photo}: mask presence differs")
            elif "mask" in g:
                st["mask"] += mask_iou(rle_decode(o["mask"]), rle_decode(g["mask"]))
                st["masks"] += 1
        for i, o in enumerate(od):
            if not used[i]:
                problems.append(f"{photo}: extra {o['class_name']} {o['score']:.3f}")
    m = max(st["matched"], 1)
    precision = st["matched"] / max(st["ours"], 1)
    recall = st["matched"] / max(st["golden"], 1)
    mean_box = st["box"] / m
    mean_mask = st["mask"] / st["masks"] if st["masks"] else float("nan")
    checks = [
        ("precision", precision, ">= 0.95", precision >= 0.95),
        ("recall", recall, ">= 0.95", recall >= 0.95),
        ("mean box IoU", mean_box, ">= 0.98", mean_box >= 0.98),
        ("mean mask IoU", mean_mask, ">= 0.95", mean_mask >= 0.95),
        ("max |score diff|", st["score"], f"<= {args.score_tol}", st["score"] <= args.score_tol),
        ("every match has a mask", st["masks"], f"== {st['matched']}", st["masks"] == st["matched"]),
    ]
    print(f"parity vs {args.golden}: ours {st['ours']}, golden {st['golden']}, matched {st['matched']}")
    print("| check | measured | goal | met |\n|---|---|---|---|")
    for name, v, goal, ok in checks:
        print(f"| {name} | {v:.4f} | {goal} | {'yes' if ok else 'NO'} |")
    for p in problems:
        print(f"  note: {p}")
    ok = all(c[3] for c in checks)
    summary = {name: v for name, v, _, _ in checks}
    summary["pass"] = ok
    if args.summary:
        json.dump(summary, open(args.summary, "w"))
    print(f"PARITY {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


# ---- report ---------------------------------------------------------------------------

def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def read_samples(path):
    """mem.csv lines: unix_ms,gpu_mib,rss_kib (either may be empty)."""
    rows = []
    if os.path.exists(path):
        for line in open(path):
            parts = line.strip().split(",")
            if len(parts) != 3:
                continue
            t = int(parts[0])
            gpu = float(parts[1]) if parts[1] else None
            rss = float(parts[2]) / 1024 if parts[2] else None
            rows.append((t, gpu, rss))
    return rows


def peak(samples, start, end, idx):
    vals = [s[idx] for s in samples if start <= s[0] <= end and s[idx] is not None]
    return max(vals) if vals else None


def fmt(v, spec=".1f"):
    return "n/a" if v is None else format(v, spec)


def report(args):
    w = args.work
    floors = [r for f in sorted(glob.glob(f"{w}/floor-*.json")) for r in read_jsonl(f)]
    env = json.load(open(f"{w}/env.json")) if os.path.exists(f"{w}/env.json") else {}
    print(f"\n## {env.get('device', '?')} on {env.get('gpu', 'no GPU')}"
          f" (driver {env.get('driver', 'n/a')}), server {env.get('server', '?')}")
    print("\n### Bare ONNX Runtime (examples/ort_floor.rs), batch 1")
    print("| model | device | sessions | p50 ms | p90 ms | p99 ms | images/s | build+warm s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in floors:
        print(f"| {r['model']} | {r['device']} | {r['sessions']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
              f"| {r['p99_ms']:.2f} | {r['ips']:.1f} | {r['build_and_warm_s']:.1f} |")
    samples = read_samples(f"{w}/mem.csv")
    base_gpu = env.get("gpu_mib_before")
    runs = glob.glob(f"{w}/load-*.jsonl")
    # In the order they ran.
    runs.sort(key=lambda f: (read_jsonl(f) or [{"start_ms": 0}])[0]["start_ms"])
    for run in runs:
        tag = os.path.basename(run)[len("load-"):-len(".jsonl")]
        rows = read_jsonl(run)
        run_file = f"{w}/run-{tag}.json"
        info = json.load(open(run_file)) if os.path.exists(run_file) else {}
        model = info.get("model", "?")
        same = [f for f in floors if f["model"] == model]
        best = max(same, key=lambda f: f["ips"]) if same else None
        one = next((f for f in same if f["sessions"] == 1), None)
        print(f"\n### Server, {tag}: {info.get('desc', '')}")
        print(f"start to ready {fmt(info.get('ready_s'), '.1f')} s; GPU memory used "
              f"{fmt(base_gpu, '.0f')} MiB before start, {fmt(info.get('gpu_mib_ready'), '.0f')} after ready; "
              f"/v1/models device: {info.get('reported_device', '?')}")
        print("| concurrency | req/s | p50 ms | p90 ms | p99 ms | statuses | errors "
              "| req/s / bare best | p50 / bare p50 (1 session) | GPU MiB peak | RSS MiB peak |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            st = " ".join(f"{k}:{v}" for k, v in sorted(r["statuses"].items()))
            ratio = r["rps"] / best["ips"] if best else None
            lat = r["p50_ms"] / one["p50_ms"] if one and r["p50_ms"] else None
            print(f"| {r['concurrency']} | {r['rps']:.1f} | {fmt(r['p50_ms'])} | {fmt(r['p90_ms'])} "
                  f"| {fmt(r['p99_ms'])} | {st} | {r['errors']} | {fmt(ratio, '.2f')} | {fmt(lat, '.2f')} "
                  f"| {fmt(peak(samples, r['start_ms'], r['end_ms'], 1), '.0f')} "
                  f"| {fmt(peak(samples, r['start_ms'], r['end_ms'], 2), '.0f')} |")
        if best:
            print(f"(bare best: {best['ips']:.1f} images/s with {best['sessions']} session(s); "
                  f"bare p50 at 1 session {one['p50_ms']:.2f} ms)" if one else "")
    return 0


def follow(_args):
    """One line per load level as loadgen finishes it (its JSON goes to a file as well)."""
    for line in sys.stdin:
        r = json.loads(line)
        print(f"    c={r['concurrency']:>3}  {r['rps']:8.1f} req/s  p50 {fmt(r['p50_ms']):>7} ms  "
              f"p99 {fmt(r['p99_ms']):>7} ms  {r['statuses']}  errors {r['errors']}", flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("parity")
    p.add_argument("--golden", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--score-tol", type=float, default=0.02)
    p.add_argument("--summary")
    r = sub.add_parser("report")
    r.add_argument("--work", required=True)
    sub.add_parser("follow")
    args = ap.parse_args()
    sys.exit({"parity": parity, "report": report, "follow": follow}[args.cmd](args))


if __name__ == "__main__":
    main()
