"""Model-agnostic causal tools for TransformerBridge models (never imports `induction`)."""
