"""Named points where crash tests stop a real cfcd process (SIGSTOP to itself), check what is on
disk, then kill it: ``CFCD_FAILPOINT=index.staged``. A no-op unless the variable names the point."""

from __future__ import annotations

import os
import signal

FAILPOINT_ENV = "CFCD_FAILPOINT"


def failpoint(name: str) -> None:
    """Stop this process (SIGSTOP) at ``name`` if ``$CFCD_FAILPOINT`` names it. Points:
    ``index.commit`` (descriptors ready, lock not taken yet), ``index.learned`` (a due
    projection learned, lock not taken yet), ``index.staged`` (new version's files written, not
    yet renamed), ``index.renamed`` (renamed, ``CURRENT`` not yet switched), ``index.published``
    (switched, old versions not yet collected), ``index.reclaim`` (a compaction's version
    published, nothing reclaimed yet), ``index.reclaiming`` (a Milvus compaction's unused
    collections dropped, rows not yet deleted), ``extract.shard`` (a shard of
    ``extract_to_dir`` written, the next one not started), ``sync.planned`` (``cfcd index
    sync`` compared its folder; nothing extracted or written yet)."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGSTOP)
