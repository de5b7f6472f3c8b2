"""Hand-built models with known heads (`handbuilt`), and the bench that scores every method against
them (`suite`)."""

from induction.bench.suite import *  # noqa: F401,F403  (toolkit 0.1 imported these from `induction.bench`)
