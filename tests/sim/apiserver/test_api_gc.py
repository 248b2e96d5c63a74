"""ownerReferences garbage collection: background, foreground and orphan propagation."""

from __future__ import annotations

from apiserver_helpers import wait_for

DS = "/apis/apps/v1/namespaces/default/daemonsets"
CM = "/api/v1/namespaces/default/configmaps"


def daemonset(name: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}}}


def owned_configmap(name: str, *owners: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": o["metadata"]["name"],
                 "uid": o["metadata"]["uid"], "blockOwnerDeletion": True} for o in owners]}}


async def test_background_deletion_removes_dependents_after_the_owner(http):
    _, ds = await http.post(DS, daemonset("d"))
    await http.post(CM, owned_configmap("c", ds))
    status, _ = await http.delete(DS + "/d")
    assert status == 200
    assert (await http.get(DS + "/d"))[0] == 404

    async def dependent_gone():
        return (await http.get(CM + "/c"))[0] == 404

    await wait_for(dependent_gone)


async def test_dependent_with_another_live_owner_survives_and_loses_the_dangling_reference(http):
    _, d1 = await http.post(DS, daemonset("d1"))
    _, d2 = await http.post(DS, daemonset("d2"))
    await http.post(CM, owned_configmap("c", d1, d2))
    await http.delete(DS + "/d1")

    async def dangling_removed():
        _, cm = await http.get(CM + "/c")
        return [r["name"] for r in cm["metadata"].get("ownerReferences", [])] == ["d2"]

    await wait_for(dangling_removed)


async def test_foreground_deletion_keeps_the_owner_until_dependents_are_gone(http, api):
    _, ds = await http.post(DS, daemonset("d"))
    await http.post(CM, {**owned_configmap("c", ds), "metadata": {**owned_configmap("c", ds)["metadata"],
                                                                  "finalizers": ["example.com/hold"]}})
    status, owner = await http.delete(DS + "/d", {"propagationPolicy": "Foreground"})
    assert status == 200 and "foregroundDeletion" in owner["metadata"]["finalizers"]

    async def dependent_deleting():
        _, cm = await http.get(CM + "/c")
        return cm["metadata"].get("deletionTimestamp")

    await wait_for(dependent_deleting)
    assert (await http.get(DS + "/d"))[0] == 200  # still waiting on its dependent
    await http.patch(CM + "/c", {"metadata": {"finalizers": None}})

    async def owner_gone():
        return (await http.get(DS + "/d"))[0] == 404

    await wait_for(owner_gone)


async def test_orphan_deletion_keeps_dependents_and_strips_their_owner_reference(http):
    _, ds = await http.post(DS, daemonset("d"))
    await http.post(CM, owned_configmap("c", ds))
    await http.delete(DS + "/d", propagationPolicy="Orphan")

    async def owner_gone():
        return (await http.get(DS + "/d"))[0] == 404

    await wait_for(owner_gone)
    status, cm = await http.get(CM + "/c")
    assert status == 200 and "ownerReferences" not in cm["metadata"]
