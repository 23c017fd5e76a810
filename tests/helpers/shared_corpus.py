"""Where the acceptance tests find the recorded API traffic (vcrpy cassettes of public projects).

The corpus is read in place, never copied into this repository: by default ``../shared/corpus``
beside the checkout (where the project's CI machines keep it), or wherever
``TOKENBUDGET_CORPUS`` points. Without it those tests are skipped with :data:`MISSING`, which says
how to run them.
"""

from __future__ import annotations

import os
from pathlib import Path

CORPUS = Path(
    os.environ.get("TOKENBUDGET_CORPUS") or Path(__file__).resolve().parents[3] / "shared" / "corpus"
)

MISSING = (
    f"the recorded-traffic corpus is not at {CORPUS}: point TOKENBUDGET_CORPUS at a folder of "
    "vcrpy cassettes with a MANIFEST.details.json (the layout README.md#development describes) "
    "to run these acceptance tests"
)
