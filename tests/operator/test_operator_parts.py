"""Small parts of the controller: Lease decisions, merge patches, the write overlay."""

from __future__ import annotations

import datetime as dt

import pytest
from lightkube.models.coordination_v1 import LeaseSpec

from ccgpu.operator.index import Overlay
from ccgpu.operator.leader import may_take
from ccgpu.operator.writer import merge_patch

NOW = dt.datetime(2026, 11, 26, 15, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, True),
        (LeaseSpec(holderIdentity="", leaseDurationSeconds=15, renewTime=NOW), True),
        (LeaseSpec(holderIdentity="me", leaseDurationSeconds=15, renewTime=NOW), True),
        (LeaseSpec(holderIdentity="other", leaseDurationSeconds=15, renewTime=NOW - dt.timedelta(seconds=5)), False),
        (LeaseSpec(holderIdentity="other", leaseDurationSeconds=15, renewTime=NOW - dt.timedelta(seconds=16)), True),
    ],
    ids=["no-lease", "free", "mine", "other-fresh", "other-expired"],
)
def test_a_replica_takes_the_lease_only_when_free_mine_or_expired(spec, expected):
    assert may_take(spec, "me", NOW) is expected


def test_merge_patch_nulls_removed_keys_and_keeps_unchanged_ones_out():
    old = {"state": "ready", "operands": {"a": {"desired": 1}, "b": {"desired": 2}}, "x": 1}
    new = {"state": "notReady", "operands": {"a": {"desired": 1}}, "x": 1}
    assert merge_patch(old, new) == {"state": "notReady", "operands": {"b": None}}


def test_overlay_shows_our_write_until_the_watch_catches_up_then_forgets_it():
    ov = Overlay()
    ov.record("nodes", "n1", "5", {"a": "1"})
    assert ov.merge("nodes", {"n1": ("4", {})}) == {"n1": {"a": "1"}}
    assert ov.merge("nodes", {"n1": ("5", {"a": "1", "b": "2"})}) == {"n1": {"a": "1", "b": "2"}}
    assert ov.pending("nodes") == 0


def test_overlay_hides_a_deleted_object_until_the_watch_drops_it():
    ov = Overlay()
    ov.record("owned", "ds", "7", None)
    assert ov.merge("owned", {"ds": ("7", {"x": 1})}) == {}
    assert ov.merge("owned", {}) == {}
    assert ov.pending("owned") == 0


def test_overlay_entries_expire_so_a_missed_delete_is_not_believed_forever():
    t = [0.0]
    ov = Overlay(ttl_s=10, clock=lambda: t[0])
    ov.record("owned", "ds", "9", {"x": 1})
    assert ov.merge("owned", {}) == {"ds": {"x": 1}}
    t[0] = 11
    assert ov.merge("owned", {}) == {}
