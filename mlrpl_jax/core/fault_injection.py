"""Test-only fault injection: the process signals itself at a named point of training.

    MLRPL_FAULT_AT=<phase>:<step>[:<signal>]   e.g. save:10, eval:12, hook:12, step:17:TERM

`phase` is one of FAULT_PHASES and `step` the global training step at that point (the step a
checkpoint is saved at; the step the state has reached when evaluation or a host hook runs;
the step just dispatched to the devices). The signal defaults to KILL, which ends the process
on the spot like a machine failure; TERM exercises preemption. tests/test_reliability.py uses
this to stop a run at exact points and check that the rerun finishes as if nothing happened.
Unset, it costs one environment lookup per call.
"""

from __future__ import annotations

import os
import signal
from typing import Any

FAULT_ENV_VAR = "MLRPL_FAULT_AT"
FAULT_PHASES = ("step", "save", "eval", "hook")


def signal_if_requested(phase: str, step: Any) -> None:
    """Sends the requested signal to this process if MLRPL_FAULT_AT names (phase, step).

    `step` may be a device scalar; it is read only when the variable is set.
    """
    request = os.environ.get(FAULT_ENV_VAR)
    if not request:
        return
    fields = request.split(":")
    if len(fields) not in (2, 3) or fields[0] not in FAULT_PHASES:
        raise ValueError(
            f"{FAULT_ENV_VAR}={request!r} must be <phase>:<step>[:<signal>] with "
            f"phase one of {FAULT_PHASES}"
        )
    if fields[0] == phase and int(fields[1]) == int(step):
        os.kill(os.getpid(), signal.Signals["SIG" + (fields[2] if len(fields) == 3 else "KILL")])
