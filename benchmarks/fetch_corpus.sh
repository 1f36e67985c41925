#!/usr/bin/env bash
# Download pinned corpora of real PyTorch code for speed, crash-freeness and false-positive checks
# of the linter. Nothing is installed: each package is unpacked into TARGET/<name>-<version>/.
# Idempotent: present folders are skipped.
#
#   libraries: five large code bases (about 4,700 .py files, 2.1M lines): mostly model code
#   training:  packages with training and evaluation loops, large and small (about 1,400 files)
#
# usage: benchmarks/fetch_corpus.sh TARGET_DIR [libraries|training|all]     (default all; PIP="python3 -m pip")
set -euo pipefail
TARGET="${1:?usage: $0 TARGET_DIR [libraries|training|all]}"
SET="${2:-all}"
PIP="${PIP:-python3 -m pip}"
mkdir -p "$TARGET"
TARGET="$(cd "$TARGET" && pwd)"

LIBRARIES="transformers==5.23.0 diffusers==0.42.1 timm==1.0.31 torchvision==0.29.1 lightning==2.6.6"
TRAINING="torchrl==0.14.1 opacus==1.6.0 learn2learn==0.2.0:sdist torchtune==0.6.1 torchattacks==3.5.1
torch-mimicry==0.1.16:sdist poutyne==1.19.0 tez==0.7.2 litmnist==0.1.0 my-cnn-package==0.2.0
cifar10-tools==0.5.5 pytorch-cnn-trainer==0.3.0 mltrainer==0.3.6 dcgan-pytorch==0.2.0 gan-pytorch==0.4.0
improvedgan-pytorch==0.1.0 convolutional-autoencoder-pytorch==1.0.1 cnn-panagiota==0.0.2
digit-recognizer-py==0.1.0 easyml-image==0.1.0 pyensemblecnn==1.0.1 torch-sentiment==0.6.0
vae-anomaly-detection==2.0.1 pytorchjeeves==0.2.0 torchfurnace==0.1.2 democlassi==0.5.1"
case "$SET" in
  libraries) SPECS="$LIBRARIES" ;;
  training) SPECS="$TRAINING" ;;
  all) SPECS="$LIBRARIES $TRAINING" ;;
  *) echo "unknown set: $SET" >&2; exit 2 ;;
esac

status=0
for item in $SPECS; do
  spec="${item%%:*}" kind=wheel
  [ "$item" != "$spec" ] && kind="${item##*:}"
  name="${spec%%==*}" version="${spec##*==}" dest="$TARGET/$name-$version"
  if [ -n "$(ls -A "$dest" 2>/dev/null)" ]; then echo "skip $name-$version"; continue; fi
  tmp="$(mktemp -d)"
  flag="--only-binary=:all:"; [ "$kind" = sdist ] && flag="--no-binary=:all:"
  if $PIP download -q --no-deps $flag -d "$tmp/dl" "$spec" >"$tmp/log" 2>&1; then
    mkdir -p "$tmp/x"
    f="$(ls "$tmp/dl" | head -1)"
    case "$f" in
      *.whl|*.zip) python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$tmp/dl/$f" "$tmp/x" ;;
      *) tar -xf "$tmp/dl/$f" -C "$tmp/x" ;;
    esac
    rm -rf "$dest"; mv "$tmp/x" "$dest"; echo "ok   $name-$version"
  else
    echo "FAIL $spec"; tail -3 "$tmp/log"; status=1
  fi
  rm -rf "$tmp"
done
echo "corpus: $(find "$TARGET" -name '*.py' | wc -l) .py files under $TARGET"
exit $status
