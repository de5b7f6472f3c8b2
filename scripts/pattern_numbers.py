"""The pattern viewer's numbers in the README: time to read the default models' patterns, each head's
stripe mass (2-layer model and 1-layer control), and the viewer's size per encoding.

    python scripts/pattern_numbers.py      # trains the default models first if they are not cached
"""

from __future__ import annotations

import time

from induction.heads.patterns import PatternConfig, head_patterns
from induction.plots.patterns import pattern_view_html
from induction.training.defaults import default_model


def main() -> None:
    two, one = default_model("2l", progress=False), default_model("1l", progress=False)
    start = time.perf_counter()
    patterns = head_patterns(two, [(layer, h) for layer in range(2) for h in range(4)])
    print(f"patterns of 8 heads x 4 prompts x {patterns.seq_len} positions: {time.perf_counter() - start:.3f} s")
    print("stripe mass, 2-layer:", {k: round(v, 3) for k, v in patterns.stripe_mass().items()})
    control = head_patterns(one, [(0, h) for h in range(4)])
    print("stripe mass, 1-layer control:", {k: round(v, 3) for k, v in control.stripe_mass().items()})
    for encoding in ("float32", "uint8"):
        print(f"viewer, 8 heads x 4 prompts, {encoding}: {len(pattern_view_html(patterns, encoding=encoding)) / 1e6:.2f} MB")
    tiny = head_patterns(two, ["L1H1"], cfg=PatternConfig(n_prompts=1, max_positions=8))
    print(f"viewer script and style: {len(pattern_view_html(tiny)) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
