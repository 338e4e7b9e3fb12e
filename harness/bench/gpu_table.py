"""The table of `python -m harness.bench.gpu`, in Markdown, from its report (gpu.json): `table(report)`."""

from __future__ import annotations

from typing import Any

from harness.bench.gpu_parts import GIB, WEIGHT_TOL


def _gib(b: Any) -> str:
    return f"{b / GIB:.2f}" if isinstance(b, (int, float)) else "-"


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"


def _cell(text: Any, n: int = 160) -> str:
    """One table cell: a failure's reason on one line, without pipes, at most n characters."""
    return " ".join(str(text or "").replace("|", "/").split())[-n:]


def _memory(mem: dict) -> list[str]:
    sh = mem.get("shapes") or {}
    kind = next((mem[o].get("mem/peak_kind") for o in ("sgd", "adamw") if o in mem), None) or "-"
    small = ", ".join(f"{k} {v}" for k, v in (sh.get("arch") or {}).items())
    lines = [f"## Memory: Qwen3-1.7B architecture, random weights{f' (small: {small})' if small else ''}; one micro-batch "
             f"of {sh.get('sequences', '-')} sequences, prompt {sh.get('prompt_tokens', '-')} + response "
             f"{sh.get('new_tokens', '-')} tokens; measured {kind}, planned by harness.plan", "",
             "| optimizer | phase | measured GiB | planned GiB | measured / planned |", "|---|---|---|---|---|"]
    for opt in ("sgd", "adamw"):
        r = mem.get(opt)
        if r is None or r["status"] != "ok":
            lines.append(f"| {opt} | - | {'not run' if r is None else r['status'] + ': ' + _cell(r.get('error'))} | | |")
            continue
        p = r["plan"]
        for phase, key, planned in (("rollout", "mem/peak_bytes_rollout", p["rollout"]),
                                    (p["update_phase"], "mem/peak_bytes_update", p["update"]),
                                    ("trial peak", "mem/peak_bytes", p["peak"])):
            lines.append(f"| {opt} | {phase} | {_gib(r.get(key))} | {_gib(planned)} | {_ratio(r.get(key), planned)} |")
    diff = mem.get("state_bytes_per_param_adamw_minus_sgd")
    lines += ["", f"Optimizer state, AdamW - SGD: {diff:.4f} bytes per parameter (expected 8)." if diff is not None
              else "Optimizer state, AdamW - SGD: not measured."]
    if "build_s" in mem:
        lines += ["", f"The random-weight model folder was built (or found in the cache) in {mem['build_s']:.1f} s."]
    return lines + [""]


def _speed(mem: dict, sp: dict) -> list[str]:
    lines = ["## Speed", "", "| what | value |", "|---|---|"]
    for opt in ("sgd", "adamw"):
        r = mem.get(opt) or {}
        if r.get("status") != "ok" or not r.get("perf/update_s_mean"):
            continue
        p, diag = r["plan"], r.get("perf/diagnostics_s_mean") or 0.0
        compute_s = r["perf/update_s_mean"] - diag  # the per-step diagnostics are part of the update's time
        achieved = p["update_flops"] / compute_s  # the planner's update + reference FLOPs per step
        mfu = (f"MFU {achieved / p['peak_flops']:.3f} of {p['peak_flops'] / 1e12:.0f} TFLOP/s ({p['device']})"
               if p.get("peak_flops") else "MFU n/a (no bf16 peak for this device)")
        lines.append(f"| update, {opt} | {achieved / 1e12:.3g} TFLOP/s: {mfu}; update {compute_s:.2f} s "
                     f"(+ diagnostics {diag:.2f} s) |")
    for b, v in (sp.get("tokens_per_s") or {}).items():
        lines.append(f"| HF generate, bf16, batch {b}, prompt {sp['prompt_tokens']} + {sp['new_tokens']} new tokens "
                     f"| {v:.1f} tokens/s |")
    if not sp.get("tokens_per_s"):
        lines.append(f"| HF generate | {sp.get('status', 'not run')} {_cell(sp.get('error'))} |")
    return lines + [""]


def _correctness(f: dict, b: dict) -> list[str]:
    lines = ["## Correctness", "", "| check | result |", "|---|---|"]
    if "ok" in f:
        lines.append(f"| fsdp2 world of one ({f['backend']}) vs one process, tiny model, AdamW, 3 steps | "
                     f"{'ok' if f['ok'] else 'DIFFERS'}: reward curve {'equal' if f['reward_curve_equal'] else 'different'}, "
                     f"grad norm rel diff {f['grad_norm_max_rel_diff']:.2g}, max weight diff "
                     f"{f['weights_max_abs_diff']:.2g} (tolerance {WEIGHT_TOL:g}) |")
    else:
        why = "; ".join(f"{k}: {_cell(f[k]['error'])}" for k in ("one", "fsdp2") if (f.get(k) or {}).get("error"))
        lines.append(f"| fsdp2 world of one vs one process | {f.get('status', 'not run')} {why} |")
    if b.get("status") == "ok" and "eval/accuracy_initial" in b:
        lines.append(f"| bf16 trial (model=tiny model.dtype=bfloat16, 3 steps) | "
                     f"{'ok' if b.get('losses_finite') else 'NON-FINITE LOSS'}: test accuracy "
                     f"{b['eval/accuracy_initial']:.3f} -> {b['eval/accuracy_final']:.3f}, {b['perf/step_s_mean']:.3f} s/step, "
                     f"peak {_gib(b['mem/peak_bytes'])} GiB |")
    else:
        lines.append(f"| bf16 trial | {b.get('status', 'not run')} {_cell(b.get('error'))} |")
    return lines + [""]


def table(report: dict) -> str:
    """The Markdown of a report: a section per part, then each part's status and time."""
    m, parts = report["machine"], report["parts"]
    where = m.get("gpu") or f"cpu ({m['cpus']} cores)"
    mem = parts.get("memory", {})
    lines = [f"# harness.bench.gpu on {where}, {m['date']} (torch {m['torch']}, transformers {m['transformers']})", "",
             *_memory(mem), *_speed(mem, parts.get("speed", {})), *_correctness(parts.get("fsdp2", {}), parts.get("bf16", {})),
             "## Parts", "", "| part | status | seconds | limit s |", "|---|---|---|---|"]
    lines += [f"| {n} | {p['status']} | {p['seconds']} | {p['limit_s']:.0f} |" for n, p in parts.items()]
    return "\n".join(lines) + "\n"
