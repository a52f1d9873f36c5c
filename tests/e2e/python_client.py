"""Drives skiff with the official Kubernetes Python client.

Usage: python_client.py KUBECONFIG NAME

Creates the ConfigMap NAME in "default", lists it, watches it change, deletes it, and
prints one line per step for the Rust test to compare.
"""

import sys

from kubernetes import client, config, watch


def main() -> int:
    kubeconfig, name = sys.argv[1], sys.argv[2]
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()

    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels={"client": "python"}),
        data={"color": "blue"},
    )
    created = v1.create_namespaced_config_map("default", body)
    print(f"created {created.metadata.name} color={created.data['color']}", flush=True)

    listed = v1.list_namespaced_config_map("default", label_selector="client=python")
    names = ",".join(sorted(item.metadata.name for item in listed.items))
    print(f"listed {names}", flush=True)

    # Change it, then watch from the revision the create returned: the watch replays
    # the change, so no thread or timing is needed to see it.
    patched = v1.patch_namespaced_config_map(name, "default", {"data": {"color": "green"}})
    stream = watch.Watch()
    for event in stream.stream(
        v1.list_namespaced_config_map,
        "default",
        field_selector=f"metadata.name={name}",
        resource_version=created.metadata.resource_version,
        timeout_seconds=30,
    ):
        obj = event["object"]
        same_rv = obj.metadata.resource_version == patched.metadata.resource_version
        print(
            f"watched {event['type']} {obj.metadata.name} color={obj.data['color']} "
            f"rv-matches-patch={same_rv}",
            flush=True,
        )
        if event["type"] == "MODIFIED":
            stream.stop()

    # The client declares this reply as a plain object (a dict).
    reply = v1.delete_namespaced_config_map(name, "default")
    print(f"deleted {name} reply={reply.get('kind')}/{reply.get('status')}", flush=True)
    try:
        v1.read_namespaced_config_map(name, "default")
        print("still there", flush=True)
    except client.exceptions.ApiException as e:
        print(f"read after delete: {e.status} {e.reason}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
