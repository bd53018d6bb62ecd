"""Hardware delegates: an external TFLite delegate library (Edge TPU, Jetson GPU, ...) under a model.

``[pipeline.delegate]`` names the library (``libedgetpu.so.1``, the TensorRT/GPU external delegate of a
Jetson), its options (strings, passed through as the library documents them) and what to do when it cannot be
used: ``fail`` (the agent does not start: the operator asked for the accelerator) or ``cpu_fallback`` (run on
the CPU and say so in status, telemetry and birth records: ``delegate.state = "cpu_fallback"`` with the cause).

Loading goes through LiteRT's (or tflite-runtime's) ``load_delegate``. Before that the library is opened with
``ctypes`` and checked for the external-delegate entry points: a missing file, a wrong architecture or a
library that is not a delegate gets one clear error naming the library and the cause (LiteRT's own errors for
those are an ``OSError``, an ``AttributeError`` and a traceback from its finalizer). A delegate may compute
int8 outputs that differ from the CPU's: the delegate's ``name`` (default: the library's file name without
``lib`` and ``.so``, e.g. ``edgetpu``) is the runtime that golden vectors and tolerances are looked up by.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from agent.errors import InferenceError
from agent.settings import DelegateConfig

log = logging.getLogger(__name__)

__all__ = ["DelegateError", "DelegateState", "delegate_name", "open_delegate"]

ENTRY_POINTS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")


class DelegateError(InferenceError):
    """A delegate library cannot be used; the message names the library and the cause."""

    def __init__(self, library: str, cause: str) -> None:
        super().__init__(f"delegate {library}: {cause}")
        self.library = library
        self.cause = cause


@dataclass(frozen=True)
class DelegateState:
    """What status and birth records say about a pipeline's delegate."""

    library: str | None = None
    name: str = "cpu"  # the runtime golden vectors are looked up by
    state: str = "none"  # none (CPU by configuration), loaded, cpu_fallback
    error: str | None = None

    def doc(self) -> dict[str, Any]:
        return {"library": self.library, "runtime": self.name, "state": self.state, "error": self.error}


def delegate_name(library: str) -> str:
    """``/usr/lib/libedgetpu.so.1`` -> ``edgetpu``; ``libnvdsp_delegate.so`` -> ``nvdsp_delegate``."""
    base = os.path.basename(library)
    base = re.sub(r"\.so(\.\d+)*$", "", base)
    return base.removeprefix("lib") or base


def open_delegate(cfg: DelegateConfig, interpreter_module: str) -> Any:
    """The runtime's delegate object for ``cfg``; raises ``DelegateError`` with the cause."""
    lib = cfg.library
    try:
        handle = ctypes.CDLL(lib)
    except OSError as e:
        raise DelegateError(lib, f"cannot open the library: {e}") from e
    missing = [sym for sym in ENTRY_POINTS if not hasattr(handle, sym)]
    if missing:
        raise DelegateError(lib, f"not an external TFLite delegate: no {', '.join(missing)} "
                                 "(expected a library like libedgetpu.so.1)")
    try:
        from importlib import import_module  # noqa: PLC0415

        load_delegate = import_module(interpreter_module).load_delegate
    except (ImportError, AttributeError) as e:
        raise DelegateError(lib, f"the TFLite runtime ({interpreter_module}) cannot load delegates: {e}") from e
    try:
        return load_delegate(lib, dict(cfg.options))
    except (ValueError, OSError, AttributeError, RuntimeError) as e:
        text = str(e).strip().replace("\n", ": ")
        raise DelegateError(lib, f"the library refused to create a delegate with options "
                                 f"{dict(cfg.options)}: {text}") from e
