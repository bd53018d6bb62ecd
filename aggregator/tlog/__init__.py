"""The transparency log's I/O shell (DESIGN §9, docs/transparency.md) over ``envelope.merkle``/``envelope.note``.

``LogIntegrator`` (one worker at a time: indices, tiles, signed checkpoints), ``ReceiptLog`` (the log
position of each receipt), ``TileCache`` (proof nodes from stored tiles), ``load_log_signer`` (the log key),
and ``aggregator.tlog.http.routes(store)`` (the read-only C2SP tlog-tiles endpoints; needs Starlette).
"""

from aggregator.tlog.integrator import LogIntegrator
from aggregator.tlog.keys import load_log_signer
from aggregator.tlog.receipts import ReceiptLog
from aggregator.tlog.tiles import TileCache

__all__ = ["LogIntegrator", "ReceiptLog", "TileCache", "load_log_signer"]
