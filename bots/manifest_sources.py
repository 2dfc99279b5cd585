"""Where the Slack manifest and Teams package sources are: the checkout's manifests/, or an installed copy."""
from __future__ import annotations

import sys
from pathlib import Path


def manifests_dir() -> Path:
    """manifests/ beside the packages in a checkout; <prefix>/share/agentdesk/manifests when installed."""
    checkout = Path(__file__).resolve().parents[1] / "manifests"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "agentdesk" / "manifests"
