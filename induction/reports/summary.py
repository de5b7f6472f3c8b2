"""The demo's summary: the few numbers that matter, each with its interval and one sentence saying what
it means, read from the reports' JSON (so every number is the one in the file named beside it).

Findings, in order: which heads are induction heads (and the control's best score), the ICL score
(bootstrap CI), the phase change (its step and the window in which it is 10%-90% complete), the causal
effect of ablating the induction heads against layer-matched random heads, and few-shot lookup
accuracy (CI) with the effect of ablating the induction heads on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Finding:
    """One headline number.

    Attributes:
        key: a stable name (`induction_heads`, `icl_score`, `phase_change`, `causal_effect`, `fewshot`).
        title: what is measured, in a few words.
        value: the number (or heads), formatted.
        interval: its interval in words (a 95% CI, a window of steps), or why there is none.
        sentence: what it means.
        sources: the JSON reports it is read from.
    """

    key: str
    title: str
    value: str
    interval: str
    sentence: str
    sources: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sources": list(self.sources)}


def _ci(pair: Any, fmt: str = "{:+.2f}") -> str:
    if not pair or pair[0] is None:
        return "no interval"
    return f"95% CI {fmt.format(pair[0])} to {fmt.format(pair[1])}"


def _heads(hs: list) -> str:
    return ", ".join(f"L{layer}H{h}" for layer, h in hs)


def induction_heads(scan: dict, control: dict | None) -> Finding:
    heads = sorted((h for h in scan["heads"] if h["is_induction"]), key=lambda h: -h["prefix_matching"])
    t = scan.get("thresholds", {})
    rule = f"prefix matching >= {t.get('prefix_matching', 0.4)}, copying >= {t.get('copying', 0.5)}"
    best = heads[0] if heads else max(scan["heads"], key=lambda h: h["prefix_matching"])
    interval = (f"strongest L{best['layer']}H{best['head']}: prefix matching {best['prefix_matching']:.2f}, "
                f"{_ci(best.get('prefix_matching_ci'), '{:.2f}')}")
    layers = sorted({h["layer"] for h in heads})
    if heads:
        where = f"layer {layers[0]}" if len(layers) == 1 else f"layers {', '.join(map(str, layers))}"
        sentence = (f"{len(heads)} head{'s' if len(heads) > 1 else ''} in {where} attend to the token that followed "
                    f"earlier occurrences of the current token and raise its logit ({rule}).")
    else:
        sentence = f"No head passes both thresholds ({rule})."
    sources = ["scan_2l.json"]
    if control is not None:
        c_best = max(h["prefix_matching"] for h in control["heads"])
        n_control = sum(h["is_induction"] for h in control["heads"])
        sentence += (f" The 1-layer control, which has no earlier layer to write the previous token, has "
                     f"{n_control or 'none'} (its best prefix matching is {c_best:.2f}).")
        sources.append("scan_1l.json")
    return Finding("induction_heads", "Induction heads", ", ".join(f"L{h['layer']}H{h['head']}" for h in heads) or "none",
                   interval, sentence, tuple(sources))


def icl_score(scan: dict, control: dict | None) -> Finding:
    icl = scan["icl"]
    sentence = (f"The loss at token {icl['late_pos']} is {-icl['score']:.2f} nats "
                f"{'lower' if icl['score'] < 0 else 'higher'} than at token {icl['early_pos']} of the same sequences: "
                f"negative means the model predicts better as the context grows (Olsson et al.'s ICL score).")
    sources = ["scan_2l.json"]
    if control is not None and control.get("icl"):
        c = control["icl"]
        sentence += f" The 1-layer control: {c['score']:+.2f} ({_ci(c.get('ci'))})."
        sources.append("scan_1l.json")
    return Finding("icl_score", "ICL score", f"{icl['score']:+.2f} nats", _ci(icl.get("ci")), sentence, tuple(sources))


def phase_change(track: dict, control: dict | None) -> Finding:
    pc = track.get("phase_change")
    sources = ["track_2l.json"] + (["track_1l.json"] if control is not None else [])
    tail = ""
    if control is not None:
        tail = " The 1-layer control has " + ("none." if control.get("phase_change") is None else
                                               f"one at step {control['phase_change']['step']}.")
    if pc is None:
        return Finding("phase_change", "Phase change", "none found", "no window",
                       "No abrupt rise of the induction heads' scores over the checkpoints." + tail, tuple(sources))
    return Finding("phase_change", "Phase change", f"step {pc['step']}",
                   f"window: steps {pc['start_step']} to {pc['end_step']}, 10% to 90% of the change",
                   "The induction heads form abruptly: their prefix matching and the ICL score change within this "
                   "window of training." + tail, tuple(sources))


def causal_effect(ablate: dict, scan: dict | None = None) -> Finding | None:
    c = ablate.get("control")
    if not c:
        return None
    induction = {(h["layer"], h["head"]) for h in scan["heads"] if h["is_induction"]} if scan else set()
    random_heads = sorted({tuple(h) for s in c.get("random_sets", []) for h in s})
    also = [h for h in random_heads if h in induction]
    n = c.get("distinct_random_sets", 0)
    interval = (f"layer-matched random heads: {c['random_effect']:+.2f}; "
                + (f"{_ci(c.get('random_effect_ci'))}, {n} distinct sets" if n > 1 else
                   f"only {n} distinct set of other heads exists in those layers, so no interval"))
    top = max(ablate["heads"], key=lambda h: abs(h["effect"]))
    sentence = (f"{ablate['method'].capitalize()}-ablating {c['heads_label']} ({_heads(c['heads'])}) together raises the "
                f"ICL score by {c['effect']:.2f} nats (worse in-context learning); ablating as many other heads of the "
                f"same layers moves it by {c['random_effect']:+.2f}"
                + (f" (those, {_heads(also)}, are induction heads too)" if also else "")
                + ". The largest single-head effect is "
                f"L{top['layer']}H{top['head']}'s ({top['effect']:+.2f}).")
    return Finding("causal_effect", "Ablating the induction heads", f"{c['effect']:+.2f} nats on the ICL score",
                   interval, sentence, (f"ablate_{ablate['method']}.json",))


def fewshot(report: dict) -> Finding | None:
    shots = {(s["labels"], s["k"]): s for s in report["shots"]}
    k = max(s["k"] for s in report["shots"])
    gold = shots.get(("gold", k))
    if gold is None:
        return None
    zero = shots.get(("gold", 0))
    sentence = f"Lookup accuracy with {k} demonstrations"
    sentence += f" (with none: {zero['accuracy']:.2f}); " if zero else "; "
    flipped = shots.get(("flipped", k))
    if flipped:
        sentence += f"with flipped labels it follows the labels shown ({flipped['accuracy']:.2f})"
    a = report.get("ablation")
    if a:
        rand = [r["accuracy"] for r in a.get("random", [])]
        sentence += (f"; ablating {_heads(a['top_heads'])} drops it to {a['top']['accuracy']:.2f} "
                     f"({_ci(a['top'].get('accuracy_ci'), '{:.2f}')})")
        if rand:
            sentence += f", layer-matched random heads to {sum(rand) / len(rand):.2f}"
    return Finding("fewshot", f"Few-shot accuracy ({report.get('task', 'lookup')})", f"{gold['accuracy']:.3f}",
                   _ci(gold.get("accuracy_ci"), "{:.3f}"), sentence + ".", ("fewshot.json",))


def demo_findings(reports: dict[str, dict]) -> list[Finding]:
    """The summary of the demo's reports (name -> `to_json()` dict, names as the demo writes them)."""
    out = [induction_heads(reports["scan_2l"], reports.get("scan_1l"))]
    if reports["scan_2l"].get("icl"):
        out.append(icl_score(reports["scan_2l"], reports.get("scan_1l")))
    out.append(phase_change(reports["track_2l"], reports.get("track_1l")))
    for name in ("ablate_zero", "ablate_mean"):
        if name in reports and (found := causal_effect(reports[name], reports["scan_2l"])):
            out.append(found)
            break
    if "fewshot" in reports and (found := fewshot(reports["fewshot"])):
        out.append(found)
    return out
