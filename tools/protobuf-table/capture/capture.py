"""Records what real kubectl sends as protobuf, as test fixtures for server/src/api/protobuf.rs.

Runs a throwaway HTTPS listener on 127.0.0.1 that answers discovery minimally, points
kubectl at it, and for each case below writes <name>.pb (the request body kubectl sent) and
<name>.json (what the same command prints with --dry-run=client -o json: upstream's JSON of
the same object). Needs python3, openssl and kubectl on PATH.

Usage: python3 capture.py [OUT_DIR]   (default: server/src/api/testdata)
"""
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                      os.path.join(HERE, "../../../server/src/api/testdata"))

CASES = [
    ("configmap", "create configmap x --from-literal=a=b"),
    ("configmap_files", "create configmap files --from-file=text.txt --from-file=blob.bin --from-literal=k=v"),
    ("secret", "create secret generic s --from-literal=password=hunter2 --type=Opaque"),
    ("secret_docker", "create secret docker-registry reg --docker-server=r.example --docker-username=u --docker-password=p"),
    ("deployment", "create deployment web --image=nginx --replicas=2"),
    ("deployment_zero", "create deployment zero --image=nginx --image=busybox --replicas=0 --port=8080"),
    ("service_nodeport", "create service nodeport web --tcp=80:8080 --node-port=30080"),
    ("service_headless", "create service clusterip headless --clusterip=None --tcp=80:http"),
    ("service_lb", "create service loadbalancer lb --tcp=443:8443,80"),
    ("service_external", "create service externalname ext --external-name=example.com"),
    ("namespace", "create namespace ns1"),
    ("job", "create job j --image=busybox -- echo hi"),
    ("cronjob", "create cronjob cj --image=busybox --schedule=*/1_*_*_*_* --restart=OnFailure -- date"),
    ("role", "create role r --verb=get,list --resource=pods,deployments.apps --resource-name=a"),
    ("clusterrole", "create clusterrole cr --verb=get --non-resource-url=/healthz"),
    ("clusterrole_agg", "create clusterrole agg --aggregation-rule=a=b"),
    ("rolebinding", "create rolebinding rb --role=r --user=u --group=g --serviceaccount=default:sa"),
    ("clusterrolebinding", "create clusterrolebinding crb --clusterrole=cr --serviceaccount=default:sa"),
    ("quota", "create quota q --hard=cpu=1500m,memory=1Gi,pods=2,requests.storage=10Gi --scopes=BestEffort"),
    ("pdb_min", "create pdb p --selector=app=web --min-available=1"),
    ("pdb_max", "create pdb p2 --selector=app=web --max-unavailable=50%"),
    ("priorityclass", "create priorityclass pc --value=1000 --preemption-policy=Never --description=d --global-default=true"),
    ("ingress", "create ingress ing --class=nginx --rule=foo.com/bar*=svc1:8080,tls=sec --annotation=a=b --default-backend=def:http"),
    ("serviceaccount", "create serviceaccount sa"),
    ("autoscale", "autoscale deployment web --min=1 --max=3 --cpu-percent=80"),
    # Copies the job template of the cron job served below, pointer zeros included.
    ("job_from", "create job fromcj --from=cronjob/cj"),
    # Has no dry run: only the body is written; token.json is kept as it is.
    ("token", "create token sa --duration=10m --audience=a"),
]

OBJECTS = {
    "/apis/apps/v1/namespaces/default/deployments/web": {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "5"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}},
    "/apis/batch/v1/namespaces/default/cronjobs/cj": {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "cj", "namespace": "default", "uid": "u2", "resourceVersion": "6"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {
            "metadata": {"labels": {"x": "y"}},
            "spec": {"backoffLimit": 0, "parallelism": 1, "ttlSecondsAfterFinished": 0,
                     "template": {"spec": {
                         "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "c", "image": "busybox", "resources": {
                             "limits": {"cpu": "500m", "memory": "128Mi"}}}]}}}}}},
}

GROUPS = {
    "v1": [("namespaces", "Namespace", False), ("configmaps", "ConfigMap", True),
           ("secrets", "Secret", True), ("services", "Service", True),
           ("serviceaccounts", "ServiceAccount", True), ("resourcequotas", "ResourceQuota", True),
           ("pods", "Pod", True)],
    "apps/v1": [("deployments", "Deployment", True), ("deployments/scale", "Scale", True)],
    "batch/v1": [("jobs", "Job", True), ("cronjobs", "CronJob", True)],
    "rbac.authorization.k8s.io/v1": [("roles", "Role", True), ("clusterroles", "ClusterRole", False),
                                     ("rolebindings", "RoleBinding", True),
                                     ("clusterrolebindings", "ClusterRoleBinding", False)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "scheduling.k8s.io/v1": [("priorityclasses", "PriorityClass", False)],
    "networking.k8s.io/v1": [("ingresses", "Ingress", True)],
    "autoscaling/v1": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
}

LAST_BODY = {}


def discovery(path, port):
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{port}"}]}
    if path == "/apis":
        groups = []
        for gv in GROUPS:
            if "/" in gv:
                g, v = gv.split("/")
                groups.append({"name": g, "versions": [{"groupVersion": gv, "version": v}],
                               "preferredVersion": {"groupVersion": gv, "version": v}})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    for gv, items in GROUPS.items():
        if path == ("/api/v1" if gv == "v1" else f"/apis/{gv}"):
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": [{"name": n, "singularName": k.lower(), "namespaced": ns,
                                   "kind": k, "verbs": ["create", "get", "list"]}
                                  for n, k, ns in items]}
    return OBJECTS.get(path)


class Handler(BaseHTTPRequestHandler):
    def reply(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        obj = discovery(self.path.split("?")[0], self.server.server_port)
        if obj is None:
            return self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "reason": "NotFound", "code": 404})
        self.reply(200, obj)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        LAST_BODY["body"] = body
        LAST_BODY["type"] = self.headers.get("Content-Type")
        # kubectl only needs a name back to print its message.
        self.reply(201, {"kind": "Status", "apiVersion": "v1", "metadata": {"name": "captured"},
                         "status": {"token": "t"}})

    def log_message(self, *args):
        pass


def main():
    work = tempfile.mkdtemp()
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-keyout", f"{work}/key.pem",
                        "-out", f"{work}/cert.pem"], check=True, capture_output=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(f"{work}/cert.pem", f"{work}/key.pem")
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_port
        with open(f"{work}/kubeconfig", "w") as f:
            f.write(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: x}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u, namespace: default}}}}]
current-context: c
""")
        with open(f"{work}/text.txt", "w") as f:
            f.write("hello\n")
        with open(f"{work}/blob.bin", "wb") as f:
            f.write(b"\x00\xff\xfebin")
        env = dict(os.environ, KUBECONFIG=f"{work}/kubeconfig", HOME=work)
        os.makedirs(OUT, exist_ok=True)
        for name, args in CASES:
            argv = ["kubectl", *[a.replace("_", " ") if a.startswith("--schedule") else a
                                 for a in args.split(" ")]]
            LAST_BODY.clear()
            subprocess.run(argv, cwd=work, env=env, capture_output=True, timeout=60)
            if "protobuf" not in (LAST_BODY.get("type") or ""):
                print(f"{name}: kubectl sent {LAST_BODY.get('type')}, skipped")
                continue
            with open(os.path.join(OUT, f"{name}.pb"), "wb") as f:
                f.write(LAST_BODY["body"])
            if name == "token":
                continue
            cut = argv.index("--") if "--" in argv else len(argv)
            dry = subprocess.run([*argv[:cut], "--dry-run=client", "-o", "json", *argv[cut:]],
                                 cwd=work, env=env, capture_output=True, text=True, timeout=60,
                                 check=True)
            with open(os.path.join(OUT, f"{name}.json"), "w") as f:
                f.write(json.dumps(json.loads(dry.stdout), separators=(",", ":")) + "\n")
            print(f"{name}: captured")
        server.shutdown()
    finally:
        shutil.rmtree(work)


main()
