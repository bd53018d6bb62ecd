"""``Outbox.delivered`` (``edge_agent_records_delivered_total``) counts every row deleted as delivered, on each
of the three delete paths (receipt, PUBACK alone, PUBACK inside a commit), and never an eviction."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.outbox import Outbox
from provisioning import SoftwareSigner
from tests.integration.test_outbox import commit, draft, make_committer

pytestmark = pytest.mark.integration


def test_every_delete_path_counts_and_evictions_do_not(tmp_path: Path) -> None:
    ob = Outbox(str(tmp_path / "o.db"), 64 * 1024)
    ob.begin_epoch()
    c = make_committer(ob, SoftwareSigner.generate())
    commit(ob, c, [draft(i) for i in range(10)])
    assert ob.delete_through(4) == 4 and ob.delivered == 4  # a receipt settled 1..4
    assert ob.delete_seqs([5, 6]) == 2 and ob.delivered == 6  # PUBACKs with no commit coming
    ob.commit([draft(10)], c.seal_draft, 4096, c.gap_draft, 0, delete_seqs=[7, 8])
    assert ob.delivered == 8  # PUBACKs carried by the next group commit
    assert ob.delete_through(4) == 0 and ob.delivered == 8, "an old receipt deletes nothing and counts nothing"
    before = ob.evicted_records
    commit(ob, c, [draft(i, size=2000) for i in range(40)])  # over the cap: the oldest are evicted
    assert ob.evicted_records > before
    assert ob.delivered == 8, "evicted rows were not delivered"
    ob.close()
