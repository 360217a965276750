"""transformers' log messages that tell a user of this project nothing, dropped only where they arise."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

NEEDLESS_PADDING = ("transformers.modeling_utils", "We strongly recommend passing in an `attention_mask`")
"""`generate` drops an all-ones attention mask as needless, then its LM warns (once) that input ids holding the pad id
came without a mask: the filler after a finished caption. SCA's prefixes have no padding."""
IMAGE_MODEL_OF_A_VIDEO_CHECKPOINT = ("transformers.configuration_utils", "You are using a model of type")
"""Loading a SAM 2 video checkpoint (the published SAM 2.1 ones are) into SAM 2's image model, which takes its image
parts: transformers warns that the types differ."""

NOT_SHARDED = ("transformers.distributed.tensor_parallel", "The following layers were not sharded")
"""Where the loading logger's level is set (`ModelSource.loading` sets it, to read transformers' table of weights that
did not load), transformers checks the model's tensor-parallel plan and lists every layer outside it: on one process,
and for a composite model whose LM alone has a plan, that is every weight of SAM and the mixer."""


@contextlib.contextmanager
def dropped(message: tuple[str, str]) -> Iterator[None]:
    """Within the block, the records of logger `message[0]` that start with `message[1]` are dropped."""
    logger_name, start = message
    logger = logging.getLogger(logger_name)

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(start)

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)
