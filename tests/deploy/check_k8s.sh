#!/usr/bin/env bash
# Offline checks of deploy/ (issue 11): every kustomize overlay renders with `kubectl kustomize`, each
# rendered object validates against the Kubernetes schemas (validate_k8s.mjs), the Grafana dashboard
# is JSON whose queries name metrics the frontend exports, and yamllint is clean.
# Exit 77 (ctest's skip) when a tool is missing: kubectl (Debian: kubernetes-client), yamllint,
# node, or the kubernetes-models/yaml npm packages (scripts/fetch_data.sh); in CI (CI=true) exit 1
# instead, so CI never passes by skipping (as tests/testing/dependencies.h does for C++ tests).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
npm_dir=${TANDEM_NPM_DIR:-$root/data/npm}
skip() {
  case "${CI:-}" in
    "" | 0 | false) echo "SKIP: $*"; exit 77 ;;
    *) echo "FAIL: missing dependency (CI=$CI, so this fails instead of skipping): $*"; exit 1 ;;
  esac
}
command -v kubectl >/dev/null || skip "kubectl not installed (Debian package kubernetes-client)"
command -v yamllint >/dev/null || skip "yamllint not installed (Debian package yamllint)"
command -v node >/dev/null || skip "node not installed"
[ -d "$npm_dir/node_modules/kubernetes-models" ] && [ -d "$npm_dir/node_modules/yaml" ] \
  || skip "npm packages kubernetes-models and yaml missing in $npm_dir (scripts/fetch_data.sh)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cd "$root"
for overlay in deploy/k8s/overlays/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" > "$out/$name.yaml" 2> "$out/$name.err" || { cat "$out/$name.err"; exit 1; }
  flags=()
  [ "$name" = gpu ] && flags+=(--gpu)
  [ "$name" = secure ] && flags+=(--secure)
  node tests/deploy/validate_k8s.mjs "$npm_dir" "$out/$name.yaml" "${flags[@]}"
done
kubectl kustomize deploy/k8s/monitoring > "$out/monitoring.yaml"
grep -q "kind: ConfigMap" "$out/monitoring.yaml"

# The dashboard: valid JSON, and every metric it queries is one the frontend exports.
python3 - "$root" <<'PY'
import json, re, sys, pathlib
root = pathlib.Path(sys.argv[1])
dash = json.loads((root / "deploy/k8s/monitoring/tandem-dashboard.json").read_text())
source = "".join(p.read_text() for p in sorted((root / "src/frontend").glob("*.cpp")))
exported = set(re.findall(r'"((?:vllm:|tandem_)[a-z0-9_:]+)"', source))
missing = []
for panel in dash["panels"]:
    for target in panel["targets"]:
        for name in re.findall(r'(?:__name__="|\b)((?:vllm:|tandem_)[a-z0-9_:]+)', target["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if base not in exported:
                missing.append(f'{panel["title"]}: {name}')
if missing:
    sys.exit("dashboard queries metrics the frontend does not export:\n" + "\n".join(missing))
print(f'dashboard: {len(dash["panels"])} panels, every metric exported')
PY

yamllint -s -c deploy/.yamllint deploy
echo "deploy checks: ok"
