"""Model-level measurements: losses, the ICL score, causal-effect metrics and effects, formation over
training (the phase change), few-shot evaluation."""
