"""Fixtures for the API simulator tests: a running server, a raw HTTP session, and the sample CRD."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from apiserver_helpers import WIDGET_CRD, Http

from ccgpu.sim.apiserver import ApiServer


@pytest.fixture
async def api() -> AsyncIterator[ApiServer]:
    async with ApiServer(bookmark_interval=0.2) as server:
        yield server


@pytest.fixture
async def http(api: ApiServer) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as session:
        yield Http(session, api.url)


@pytest.fixture
async def crd(http: Http) -> dict[str, Any]:
    status, body = await http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
    assert status == 201, body
    return body
