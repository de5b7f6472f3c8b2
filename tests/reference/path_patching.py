"""Path patching written out with hooks only, one path at a time (what `circuits.patch_paths` must equal).

Forward 1: the corrupted run with every head's `hook_z` and every MLP's `hook_mlp_out` frozen at
its corrupted value, except the sender head's z, which takes its clean value; the receiver
layer's `hook_q` / `hook_k` / `hook_v` (the path's input) is recorded. Forward 2: the corrupted
run with that input replaced by the recorded one, recording the receiver layer's `hook_z`
(replacing the whole hook and reading the one head keeps grouped key/value heads out of the
question). Forward 3: the corrupted run with the receiver head's z replaced by the recorded one;
the metric of its logits is the path's value.
"""

from __future__ import annotations

import torch


def naive_patch_path(model, clean_tokens, corrupted_tokens, metric, sender, receiver, which):
    n_layers = model.cfg.n_layers
    (ls, hs), (lr, hr) = sender, receiver
    with torch.no_grad():
        _, clean = model.run_with_cache(clean_tokens)
        _, corr = model.run_with_cache(corrupted_tokens)
    names = set(corr.keys())

    def freeze_z(layer):
        def hook(z, hook):
            z = corr[f"blocks.{layer}.attn.hook_z"].clone()
            if layer == ls:
                z[:, :, hs] = clean[f"blocks.{layer}.attn.hook_z"][:, :, hs]
            return z
        return hook

    def freeze(name):
        return lambda x, hook: corr[name]

    recorded = {}

    def record(key):
        def hook(x, hook):
            recorded[key] = x.detach().clone()
        return hook

    qkv = f"blocks.{lr}.attn.hook_{which}"
    hooks = [(f"blocks.{layer}.attn.hook_z", freeze_z(layer)) for layer in range(n_layers)]
    hooks += [(f"blocks.{layer}.hook_mlp_out", freeze(f"blocks.{layer}.hook_mlp_out")) for layer in range(n_layers)
              if f"blocks.{layer}.hook_mlp_out" in names]
    hooks += [(qkv, record("input"))]
    with torch.no_grad():
        model.run_with_hooks(corrupted_tokens, fwd_hooks=hooks)
        model.run_with_hooks(corrupted_tokens, fwd_hooks=[(qkv, lambda x, hook: recorded["input"]),
                                                          (f"blocks.{lr}.attn.hook_z", record("z"))])

        def patch_receiver(z, hook):
            z = z.clone()
            z[:, :, hr] = recorded["z"][:, :, hr]
            return z

        logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(f"blocks.{lr}.attn.hook_z", patch_receiver)])
        return float(metric(logits))
