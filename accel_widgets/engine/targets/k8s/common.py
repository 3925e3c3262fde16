"""What the Kubernetes and KServe targets share, in one namespace over the modules that hold
it by concern: :mod:`.manifests`, :mod:`.api`, :mod:`.rollout`, :mod:`.capacity` and
:mod:`.cluster`. The targets import from those modules directly; this one is what the old
``engine.targets.k8s_common`` name points to (``engine/_moved.py``), and the tests' handle
on the whole shared surface.

Both targets build plain manifests (dicts), apply them with the official ``kubernetes``
client to a kubeconfig context, record the service in the workspace, wait with progress,
and explain a stuck rollout in the user's words. Everything they create carries the labels
of :func:`labels`, so ``delete`` (and the clean-up after a failed deploy) finds all of it by
one label selector.

The ``kubernetes`` package (>= 37) is imported only inside the calls that talk to a cluster:
``manifests`` works without it. Requests go through the client's own ``ApiClient`` (its
kubeconfig loading, token and certificate handling, its transport) on the documented REST
paths of each kind, so one small table serves core objects and KServe's custom resources.

The quota step's check (:meth:`ClusterTarget.check_capacity`) reads the nodes'
``status.allocatable`` and the requests of the pods on them, and compares what is free where
the pods may go with replicas x the requests the manifests give the model's pods.
"""

from __future__ import annotations

from accel_widgets.engine.targets.k8s.api import (
    Kube,
    KubeApiError,
    connect,
    kubeconfig_path,
)
from accel_widgets.engine.targets.k8s.capacity import (
    COUNTED,
    QUEUE_PROXY_CPU_M,
    amount_text,
    capacity_model,
    container_requests,
    free_text,
    need_text,
    node_excluded,
    parse_quantity,
    pod_requests,
    quota_row,
    read_nodes,
    to_cores,
    to_gib,
    tolerates,
)
from accel_widgets.engine.targets.k8s.cluster import (
    ClusterTarget,
)
from accel_widgets.engine.targets.k8s.manifests import (
    DELETE_OPTIONS,
    GPU_RESOURCE,
    K8S_NAME_RE,
    KINDS,
    MANAGED_BY,
    SECRET_KEY,
    SECRET_MOUNT,
    SECRET_VOLUME,
    SERVICE_LABEL,
    api_key_secret,
    check_k8s_name,
    check_keys_from_file,
    check_settings,
    common_settings,
    container_security,
    gpu_tolerations,
    grpc_probe,
    labels,
    metadata,
    mount_secret,
    parse_autoscale,
    pod_security,
    resources_for,
    secret_name,
    selector,
    server_args,
    server_env,
)
from accel_widgets.engine.targets.k8s.rollout import (
    POLL_S,
    UNSCHEDULABLE_GRACE_S,
    connect_hint,
    pending_reason,
    pod_trouble,
    split_url,
    waiting_containers,
)

__all__ = [
    "COUNTED",
    "DELETE_OPTIONS",
    "GPU_RESOURCE",
    "K8S_NAME_RE",
    "KINDS",
    "MANAGED_BY",
    "POLL_S",
    "QUEUE_PROXY_CPU_M",
    "SECRET_KEY",
    "SECRET_MOUNT",
    "SECRET_VOLUME",
    "SERVICE_LABEL",
    "UNSCHEDULABLE_GRACE_S",
    "ClusterTarget",
    "Kube",
    "KubeApiError",
    "amount_text",
    "api_key_secret",
    "capacity_model",
    "check_k8s_name",
    "check_keys_from_file",
    "check_settings",
    "common_settings",
    "connect",
    "connect_hint",
    "container_requests",
    "container_security",
    "free_text",
    "gpu_tolerations",
    "grpc_probe",
    "kubeconfig_path",
    "labels",
    "metadata",
    "mount_secret",
    "need_text",
    "node_excluded",
    "parse_autoscale",
    "parse_quantity",
    "pending_reason",
    "pod_requests",
    "pod_security",
    "pod_trouble",
    "quota_row",
    "read_nodes",
    "resources_for",
    "secret_name",
    "selector",
    "server_args",
    "server_env",
    "split_url",
    "to_cores",
    "to_gib",
    "tolerates",
    "waiting_containers",
]
