"""Find, score and causally test induction heads in TransformerLens models."""
