"""Third-party chatter off while a model loads: stderr carries the toolkit's progress and errors only.

Loading a Hugging Face model imports its modelling module, and some of those ask transformers
whether a flash-attention kernel could be fetched from the hub; with the hub offline the `kernels`
package then logs "Skipping publisher trust check for 'kernels-community/flash-attn…' because
Hugging Face Hub is in offline mode" once per kernel (three lines for GPT-Neo). The toolkit never
uses those kernels (it loads with ``attn_implementation="eager"``), so these lines say nothing
to its user. The filter is narrow: that logger, that message; every other warning still shows.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

# (logger name, message prefix) of each third-party line that loading may print and that is noise here.
SILENCED = (
    ("kernels._internals.hf_hub", "Skipping publisher trust check for "),
)


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextmanager
def quiet_third_parties() -> Iterator[None]:
    """Drop the `SILENCED` log lines for the duration (a filter on each named logger, removed after)."""
    added = [(logging.getLogger(name), _DropMessages(prefix)) for name, prefix in SILENCED]
    for logger, drop in added:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger, drop in added:
            logger.removeFilter(drop)
