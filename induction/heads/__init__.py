"""Per-head scores: the detector (prefix matching, copying, previous-token, duplicate-token),
shifted induction (offsets) and the circuits it implies."""
