"""CI step: `dvc pull` from the Google Drive remote with a service-account key.

The key is the JSON of a Google Cloud service account, held in the CI secret
GDRIVE_CREDENTIALS_DATA (DVC's gdrive remote reads it from that variable; with
gdrive_use_service_account = true in .dvc/config no browser prompt can appear). Without the
secret, or with one that is not a service-account key, the step fails at once with one line
naming GDRIVE_CREDENTIALS_DATA; the key's content is never printed.

    GDRIVE_CREDENTIALS_DATA='${{ secrets.GDRIVE_CREDENTIALS_DATA }}' python scripts/dvc_pull_ci.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SECRET = "GDRIVE_CREDENTIALS_DATA"
PROJECT_DIR = Path(__file__).resolve().parent.parent


def check_secret(value: str | None) -> str:
    """Why the secret cannot be used ('' when it can); never quotes the value."""
    if not value or not value.strip():
        return f"secret {SECRET} is not set: add the service-account JSON key as a CI secret"
    try:
        key = json.loads(value)
    except json.JSONDecodeError:
        return f"secret {SECRET} is not JSON: it must hold a service-account JSON key"
    if not isinstance(key, dict) or key.get("type") != "service_account":
        return f'secret {SECRET} is not a service-account key (no "type": "service_account")'
    missing = [k for k in ("client_email", "private_key") if not key.get(k)]
    if missing:
        return f"secret {SECRET} lacks {', '.join(missing)}"
    return ""


def main() -> int:
    why = check_secret(os.environ.get(SECRET))
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    timeout = float(os.environ.get("DVC_PULL_TIMEOUT", "600"))
    dvc = str(Path(sys.executable).with_name("dvc"))
    try:
        result = subprocess.run(
            [dvc, "pull", "data.dvc"],
            cwd=PROJECT_DIR,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            env={**os.environ, "DVC_NO_ANALYTICS": "1"},
        )
    except subprocess.TimeoutExpired:
        print(f"error: dvc pull gave no answer within {timeout:.0f} s", file=sys.stderr)
        return 2
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
