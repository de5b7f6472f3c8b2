"""Model specs to a TransformerBridge: run, checkpoint, Hugging Face and Trainer directories, devices,
the per-checkpoint result cache, and the checkpoint sources `track` walks."""
