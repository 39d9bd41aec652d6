"""A local Hub server for the real huggingface_hub client.

huggingface_hub reads HF_ENDPOINT and HF_HUB_DISABLE_XET when it is imported, so the server
starts and the variables are set here, at import, before any test imports the client. When
another test module imported huggingface_hub first (a full-suite run), the `hub` fixture also
points the already-read constants at this server.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub.server import HubServer, HubState, start_hub

TOKEN = "hf_testtoken_alice_0123456789abcdef"  # a fake token: tests check it never leaks
OTHER_TOKEN = "hf_testtoken_bob_0123456789abcdef"

_server, _thread = start_hub({TOKEN: "alice", OTHER_TOKEN: "bob"}, {"acme": {"alice"}})
_hf_home = tempfile.mkdtemp(prefix="adapt-test-hf-home-")
os.environ.update({
    "HF_ENDPOINT": _server.endpoint,
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HOME": _hf_home,
})


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """The local Hub with a fresh, empty state, alice's token in HF_TOKEN and a fresh HF cache."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    # tests/conftest.py keeps the suite offline; only these tests reach the local server
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", _server.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        _server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    _server.state = HubState(tokens={TOKEN: "alice", OTHER_TOKEN: "bob"},
                             orgs={"acme": {"alice"}})
    yield _server
