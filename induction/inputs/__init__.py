"""What the models read: repeated-token prompts, the synthetic training streams and their configs,
few-shot tasks and the small text datasets shipped with them."""
