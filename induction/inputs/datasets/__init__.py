"""Small text datasets for few-shot prompts, written by the team and shipped with the package.

Each ``<name>.json`` holds ``{"name", "description", "pairs": [[input, label], ...]}``; read them
with `induction.inputs.tasks.load_text_task(name)`. ``control_words.json`` holds the words that the label
manipulations substitute: ``unrelated_labels`` (semantically unrelated label words, Wei et al.
2023) and ``random_inputs`` (inputs from outside every task, Min et al. 2022).
"""
