"""The quota step for the Kubernetes and KServe targets: the cluster's room against the pods.

No Kubernetes API server can run on these machines, so these tests run the real
``kubernetes`` client against ``tests/k8s_api_server.py``, a fake API server on loopback
that lists the nodes it is given (``status.allocatable``, taints, cordoned) and the pods
placed on them with their requests. What the target's check reads, and the verdict, rows
and advice a user sees, are asserted through ``check_quota`` as the quota step calls it.

Pod sizes come from the catalog (``resnet50``: 1 core and 448 MiB a pod; ``vgg16``: 2 cores
and 1.5 GiB) or, with no model named, the default size of a custom model (1 core, 512 MiB).
"""

from __future__ import annotations

import pytest
from k8s_api_server import FakeKubeAPI, node, pushed_squeezenet

from accel_widgets.engine.targets.k8s import common as kc
from accel_widgets.engine.targets.quota import check_quota
from accel_widgets.errors import QuotaError
from accel_widgets.progress import EventLog

pytestmark = pytest.mark.timeout(60)

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@pytest.fixture
def make_cluster(tmp_path):
    """A fake cluster with the given nodes; ``fake.kubeconfig`` points at it."""
    with_them = []

    def make(*nodes, **kwargs):
        fake = FakeKubeAPI(nodes=list(nodes), **kwargs).__enter__()
        fake.kubeconfig = fake.write_kubeconfig(tmp_path / f"kubeconfig-{len(with_them)}")
        with_them.append(fake)
        return fake

    yield make
    for fake in with_them:
        fake.__exit__(None, None, None)


def quota(cluster, workspace, target="kubernetes", model="resnet50", **settings):
    return check_quota(
        target,
        settings={"kubeconfig": str(cluster.kubeconfig), **settings},
        model=model,
        workspace=workspace,
    )


def rows(report):
    return {r.name: (r.current, r.limit, r.needed, r.enough) for r in report.rows}


def test_enough_capacity_gives_the_numbers_and_a_yes(make_cluster, workspace):
    cluster = make_cluster(node("pool-1", "4", "16Gi"), node("pool-2", "3920m", "16Gi"))
    cluster.add_pod("web-1", "pool-1", cpu="1", memory="2Gi")
    cluster.add_pod("batch-done", "pool-2", cpu="3", memory="8Gi", phase="Succeeded")
    cluster.add_pod("limits-only", "pool-2", cpu="500m", memory="1Gi", limits_only=True)
    events = EventLog()
    report = check_quota(
        "kubernetes",
        settings={"kubeconfig": str(cluster.kubeconfig), "namespace": "ml", "replicas": 2},
        model="resnet50",
        workspace=workspace,
        progress=events,
    )
    assert report.target == "kubernetes" and report.verdict is True
    # Finished pods do not count; a pod with limits only is counted at its limits.
    assert rows(report) == {
        "CPU (cluster)": (1.5, 7.92, 2.0, True),
        "memory (cluster)": (3.0, 32.0, 0.875, True),  # 2 x 448 MiB
    }
    assert [r.unit for r in report.rows] == ["cores", "GiB"]
    assert report.advice == (
        "Context fake has room for 2 pods of resnet50 (1 core and 448 MiB a pod); 6 would fit now."
    )
    details = report.details
    assert (details["context"], details["namespace"], details["replicas"]) == ("fake", "ml", 2)
    assert details["per_pod"] == {"cpu": 1.0, "memory_gib": 0.4375, "gpu": 0}
    assert [(n["name"], n["counted"], n["pods_that_fit"]) for n in details["nodes"]] == [
        ("pool-1", True, 3),
        ("pool-2", True, 3),  # 3.42 cores free
    ]
    assert details["nodes"][1]["free"]["cpu"] == pytest.approx(3.42)
    assert details["largest_node_free"]["node"] in ("pool-1", "pool-2")
    # What was read: the namespace, the nodes, the pods still running anywhere.
    assert cluster.calls == [
        ("GET", "/api/v1/namespaces/ml"),
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/pods"),
    ]
    assert cluster.writes() == []
    messages = [e.message for e in events]
    assert messages[0] == "connecting to the cluster (current)"
    assert "comparing with 2 pod(s) of 1 core and 448 MiB" in messages
    assert events[-1].fraction == 1.0


def test_autoscale_checks_min_now_and_says_what_max_needs(make_cluster, workspace):
    cluster = make_cluster(node("pool-1", "4", "16Gi"), node("pool-2", "4", "16Gi"))
    report = quota(cluster, workspace, autoscale="2:10")
    assert report.verdict is True
    assert rows(report)["CPU (cluster)"] == (0.0, 8.0, 2.0, True)
    assert "At the autoscale maximum of 10 pods it needs 10 cores and 4.38 GiB" in report.advice
    assert "only 8 fit now, so scale the node pool" in report.advice
    assert report.details["max_needed"] == {"cpu": 10.0, "memory_gib": 4.375, "gpu": 0}


def test_not_enough_cpu_on_the_cluster_says_what_to_do(make_cluster, workspace):
    cluster = make_cluster(node("pool-1", "2", "8Gi"), node("pool-2", "2", "8Gi"))
    cluster.add_pod("web-1", "pool-1", cpu="1500m", memory="1Gi")
    cluster.add_pod("web-2", "pool-2", cpu="1500m", memory="1Gi", namespace="ml")
    report = quota(cluster, workspace, model="vgg16", replicas=3)
    assert report.verdict is False
    assert rows(report)["CPU (cluster)"] == (3.0, 4.0, 6.0, False)
    assert rows(report)["memory (cluster)"][3] is True
    assert report.advice.startswith(
        "3 pods of vgg16 need more than context fake has free "
        "(1 core free of 6 cores needed): scale the node pool (on AKS: `az aks nodepool "
        "scale --node-count N ...`, or turn on the cluster autoscaler), ask for fewer "
        "replicas (none fits now), or pick a smaller model."
    )


def test_enough_in_total_but_no_single_node_fits_a_pod(make_cluster, workspace):
    nodes = [node(f"small-{i}", "4", "16Gi") for i in range(3)]
    cluster = make_cluster(*nodes)
    for i in range(3):
        cluster.add_pod(f"busy-{i}", f"small-{i}", cpu="2500m", memory="1Gi")
    report = quota(cluster, workspace, model="vgg16", replicas=2)
    # 4.5 cores free in all, 4 needed: the rows say yes, the pods do not fit.
    assert rows(report)["CPU (cluster)"] == (7.5, 12.0, 4.0, True)
    assert all(r.enough for r in report.rows)
    assert report.verdict is False
    assert report.details["pods_that_fit"] == 0
    assert report.details["largest_node_free"] == {
        "node": "small-0", "cpu": 1.5, "memory_gib": 15.0, "gpu": 0, "pods_that_fit": 0,
    }  # fmt: skip
    assert report.advice == (
        "Enough in total, but no single node has room for one pod (2 cores and 1.5 GiB a "
        "pod); the node with the most room, small-0, has 1.5 cores and 15 GiB free. The "
        "free capacity is split across nodes: add a node pool of larger nodes, free some "
        "room on one node, or pick a smaller model."
    )


def test_when_only_some_pods_fit_the_advice_says_how_many(make_cluster, workspace):
    cluster = make_cluster(node("a", "3", "16Gi"), node("b", "3", "16Gi"))
    report = quota(cluster, workspace, model="vgg16", replicas=3)  # 6 of 6 cores, 1 per node
    assert all(r.enough for r in report.rows) and report.verdict is False
    assert "only 2 of the 3 pods fit on the nodes as they are" in report.advice
    assert "ask for 2 replicas, scale the node pool, or pick a smaller model" in report.advice


def test_gpu_asked_but_no_gpu_nodes_advises_a_gpu_node_pool(make_cluster, workspace):
    cluster = make_cluster(node("cpu-1", "8", "32Gi"), node("cpu-2", "8", "32Gi"))
    report = quota(cluster, workspace, gpu=1)
    assert report.verdict is False
    assert rows(report)["GPUs (cluster)"] == (0.0, 0.0, 1.0, False)
    assert report.rows[2].unit == "GPUs"
    assert "no schedulable node of context fake has nvidia.com/gpu" in report.advice
    assert "add a GPU node pool with the NVIDIA device plugin" in report.advice
    assert "or deploy without GPUs (gpu=0)" in report.advice


def test_tainted_and_cordoned_nodes_are_not_counted(make_cluster, workspace):
    cluster = make_cluster(
        node("cpu-1", "2", "8Gi"),
        node("gpu-1", "8", "56Gi", gpu=1, taints=(GPU_TAINT,)),
        node("spot-1", "16", "64Gi", taints=({"key": "spot", "effect": "NoSchedule"},)),
        node("old-1", "16", "64Gi", unschedulable=True),
        node("down-1", "16", "64Gi", ready=False),
        node("prefer-1", "2", "8Gi", taints=({"key": "x", "effect": "PreferNoSchedule"},)),
    )
    report = quota(cluster, workspace, replicas=5)
    # Only cpu-1 and prefer-1 take CPU pods: 4 cores for 5 pods of 1 core.
    assert rows(report)["CPU (cluster)"] == (0.0, 4.0, 5.0, False)
    assert report.verdict is False
    assert report.advice.endswith(
        "Not counted: gpu-1 (taint nvidia.com/gpu=present:NoSchedule, not tolerated), spot-1 "
        "(taint spot:NoSchedule, not tolerated), old-1 (cordoned), down-1 (not Ready)."
    )
    counted = {n["name"]: n["counted"] for n in report.details["nodes"]}
    assert counted == {
        "cpu-1": True, "gpu-1": False, "spot-1": False, "old-1": False, "down-1": False,
        "prefer-1": True,
    }  # fmt: skip
    # The GPU variant tolerates nvidia.com/gpu: now the GPU node counts, the spot one not.
    cluster.add_pod("trainer", "gpu-1", cpu="2", memory="8Gi", gpu=0)
    gpu = quota(cluster, workspace, gpu=1)
    assert gpu.verdict is True
    assert rows(gpu)["GPUs (cluster)"] == (0.0, 1.0, 1.0, True)
    assert rows(gpu)["CPU (cluster)"] == (2.0, 12.0, 1.0, True)
    assert gpu.details["pods_that_fit"] == 1  # only gpu-1 has a GPU
    taken = quota(cluster, workspace, gpu=1, replicas=2)
    assert taken.verdict is False and "at most 1 fit now" in taken.advice


def test_a_gpu_in_use_is_subtracted(make_cluster, workspace):
    cluster = make_cluster(node("gpu-1", "8", "56Gi", gpu=1, taints=(GPU_TAINT,)))
    cluster.add_pod("trainer", "gpu-1", cpu="1", memory="4Gi", gpu=1)
    report = quota(cluster, workspace, gpu=1)
    assert rows(report)["GPUs (cluster)"] == (1.0, 1.0, 1.0, False)
    assert report.verdict is False and "or GPU nodes" in report.advice


def test_no_model_named_is_sized_as_a_small_custom_model(make_cluster, workspace):
    cluster = make_cluster(node("pool-1", "4", "16Gi"))
    report = quota(cluster, workspace, model=None)
    assert report.details["per_pod"] == {"cpu": 1.0, "memory_gib": 0.5, "gpu": 0}
    assert "a custom model of the default size" in report.details["model"]
    assert report.advice.endswith("name the model for its own requests.")


def test_a_workspace_model_is_sized_from_its_artifact(
    make_cluster, workspace, tmp_path, weights_dir
):
    pushed_squeezenet(workspace, weights_dir, tmp_path)
    cluster = make_cluster(node("pool-1", "4", "16Gi"))
    report = quota(cluster, str(workspace.root), model="sq")
    assert report.details["model"] == "sq:1 (fp16)"
    assert report.details["per_pod"]["memory_gib"] == 0.5  # 4 x 2.4 MB + 256 MiB < 512 MiB
    with pytest.raises(QuotaError, match=r"cannot size the pods for model 'nope'.*resnet50"):
        quota(cluster, workspace, model="nope")


def test_kserve_counts_the_queue_proxy_in_serverless_mode(make_cluster, workspace):
    cluster = make_cluster(node("pool-1", "4", "16Gi"))
    serverless = quota(cluster, workspace, target="kserve", replicas=2)
    assert serverless.target == "kserve" and serverless.verdict is True
    assert serverless.details["per_pod"]["cpu"] == 1.025
    assert rows(serverless)["CPU (cluster)"][2] == 2.05
    raw = quota(cluster, workspace, target="kserve", replicas=2, mode="raw")
    assert rows(raw)["CPU (cluster)"][2] == 2.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kubeconfig": "/nonexistent/kubeconfig"}, "no kubeconfig at /nonexistent/kubeconfig"),
        ({"context": "prod"}, "no context 'prod' in the kubeconfig .*its contexts: fake, stag"),
        ({"namespace": "missing"}, "namespace 'missing' does not exist in context fake"),
        ({"autoscale": "10:2"}, "autoscale '10:2': MIN must be at least 1 and at most MAX"),
        ({"gpu": -1}, r"gpu=-1 must be 0 \(none\)"),
    ],
)
@pytest.mark.parametrize("target", ["kubernetes", "kserve"])
def test_bad_settings_are_quota_errors_in_the_users_words(
    make_cluster, workspace, target, settings, message
):
    cluster = make_cluster(node("pool-1"))
    given = {"kubeconfig": str(cluster.kubeconfig), **settings}
    with pytest.raises(QuotaError, match=message):
        check_quota(target, settings=given, workspace=workspace, model="resnet50")
    assert cluster.writes() == []


def test_rejected_credentials_say_what_the_check_needs(make_cluster, workspace):
    cluster = make_cluster(node("pool-1"))
    cluster.token = "rotated"
    with pytest.raises(QuotaError) as caught:
        quota(cluster, workspace)
    assert "check the credentials of context fake" in str(caught.value)
    assert "permission to list nodes and pods in all namespaces" in str(caught.value)


def test_quantities_and_pod_requests_as_the_scheduler_counts_them():
    assert kc.parse_quantity("3920m") == pytest.approx(3.92)
    assert kc.parse_quantity("16Gi") == 16 * 2**30
    assert kc.parse_quantity("128974848") == 128974848
    assert kc.parse_quantity("129M") == 129e6
    assert kc.parse_quantity("1e3") == 1000
    assert kc.parse_quantity(2) == 2
    with pytest.raises(Exception, match="is not a Kubernetes quantity"):
        kc.parse_quantity("lots")
    pod = {
        "spec": {
            "containers": [
                {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                {"resources": {"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"}}},
            ],
            "initContainers": [
                {"resources": {"requests": {"cpu": "2", "memory": "16Mi"}}},
                {"restartPolicy": "Always", "resources": {"requests": {"memory": "32Mi"}}},
            ],
            "overhead": {"cpu": "100m"},
        }
    }
    assert kc.pod_requests(pod) == {
        "cpu": 2100,  # the init container's 2 cores beat 1.25, plus the overhead
        "memory": (64 + 1024 + 32) * 2**20,
        "nvidia.com/gpu": 1,
    }
