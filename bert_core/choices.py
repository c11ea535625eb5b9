"""The names a user chooses from that more than one module checks: optimizers and precisions.

The stage configs (bert_core.config) take these Literals as field types, so the CLI's `choices`
and the error for a wrong name come from here; bert_core.optimization and bert_core.training map
the same names to their implementations.
"""

from __future__ import annotations

import typing
from typing import Literal

OptimizerType = Literal["adam", "lamb", "nadam", "nlamb"]
OPTIMIZER_TYPES: tuple[str, ...] = typing.get_args(OptimizerType)

Precision = Literal["fp32", "fp16", "bf16"]
