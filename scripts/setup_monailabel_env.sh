#!/usr/bin/env bash
# Creates (once) the separate MONAI Label environment, by default in .venv-monailabel (never the core .venv):
# MONAI Label 0.8.5 pins numpy < 2 and jsonschema 3.2 (through pydicom-seg), needs pydicom < 3 and imports
# torchvision, none of which the core environment may have.
#
# Installs torch==2.14.1 + torchvision==0.29.1 together (local wheels on these machines), monailabel==0.8.5,
# monai==1.6.1 (the version the bundles are written for; monailabel 0.8.5 asks for monai >= 1.4), the libraries
# the custom components import, and this repository (--no-deps -e).
#
# Usage: bash scripts/setup_monailabel_env.sh            (env var MONAILABEL_VENV overrides the folder)
# Prints the venv path on its last line. Re-running is cheap: a stamp file records what was installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MONAILABEL_VENV:-$ROOT/.venv-monailabel}"
PY="${PYTHON:-python3}"

PKGS=(
  "monailabel==0.8.5"
  "monai==1.6.1"
  "numpy<2"
  "pydicom<3"
  "jsonschema==3.2.0"
  "pytorch-ignite==0.5.5"
  "nibabel"
  "pillow"
  "scipy"
  "scikit-image"
  "SimpleITK"
  "matplotlib"
  "einops"
  "PyYAML"
  "h5py"
  "pytest"
)
TORCH=("torch==2.14.1" "torchvision==0.29.1")

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup-monailabel] creating $VENV"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.monailabel-setup.sha256"
WANT="$(printf '%s\n' "${TORCH[@]}" "${PKGS[@]}" | cat - "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[setup-monailabel] installing into $VENV (several minutes the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # torch and torchvision first and together, pinned, so that nothing later pulls another build
  "$VENV/bin/python" -m pip install -q "${TORCH[@]}"
  "$VENV/bin/python" -m pip install -q "${TORCH[@]}" "${PKGS[@]}"
  "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT"
  "$VENV/bin/python" - <<'EOF'
import monai, monailabel, numpy, torch, torchvision
import custom_components.networks.deployable  # noqa: F401  (our components import under this monai)
print(f"[setup-monailabel] monailabel {monailabel.__version__}, monai {monai.__version__}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, numpy {numpy.__version__}")
EOF
  echo "$WANT" > "$STAMP"
fi
echo "$VENV"
