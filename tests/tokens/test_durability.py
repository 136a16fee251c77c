"""kill -9 of a process that just revoked and rotated: its successor must still deny."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pdp.tokens import InvalidToken, OAuthError

from .support import ISSUER, make_runtime

_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from tests.tokens.support import ISSUER, make_runtime

    rt = make_runtime(Path(sys.argv[1]), ISSUER, None, [])
    secret = rt.service.create_client("m2m", tenant="acme")
    client = rt.service.authenticate_client("m2m", secret, "x")
    revoked = rt.service.client_credentials(client, None).access
    kept = rt.service.client_credentials(client, None).access
    rt.service.revoke(client, revoked.token)
    kid = rt.keys.rotate()
    print(json.dumps({"revoked": revoked.token, "kept": kept.token, "secret": secret,
                      "kid": kid}), flush=True)
    time.sleep(60)  # killed long before this ends: no close(), no checkpoint, no atexit
    """
)


@pytest.mark.timeout(30)
def test_kill_9_never_unrevokes(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, "the child process died before reporting"
        state = json.loads(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    rt = make_runtime(tmp_path, ISSUER, None, [])
    try:
        with pytest.raises(InvalidToken, match="revoked"):
            rt.verifier.verify(state["revoked"])
        assert rt.verifier.verify(state["kept"]).subject == "m2m"
        assert rt.keys.snapshot.signing is not None
        assert rt.keys.snapshot.signing.kid == state["kid"]
        assert rt.service.authenticate_client("m2m", state["secret"], "y").client_id == "m2m"
        with pytest.raises(OAuthError):
            rt.service.authenticate_client("m2m", "wrong", "y")
    finally:
        rt.close()
