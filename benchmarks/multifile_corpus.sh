#!/usr/bin/env bash
# Multi-file training projects nobody here wrote, pinned, for whole-program precision reviews
# (benchmarks/corpus-review/whole-program-multifile.md). Cloned into TARGET (never committed).
#   usage: benchmarks/multifile_corpus.sh TARGET
set -euo pipefail
TARGET="${1:?usage: $0 TARGET}"
mkdir -p "$TARGET"
while read -r repo commit; do
  dest="$TARGET/${repo/\//+}"
  if [ -d "$dest" ]; then echo "skip $repo"; continue; fi
  git init -q "$dest"
  git -C "$dest" fetch -q --depth 1 "https://github.com/$repo" "$commit"
  git -C "$dest" checkout -q FETCH_HEAD
  echo "ok   $repo@$commit"
done <<'LIST'
pytorch/examples 77f55b912142e11fcfdf5b530231fb9c52f181e8
karpathy/nanoGPT 3adf61e154c3fe3fca428ad6bc3818b27a3b8291
kuangliu/pytorch-cifar 49b7aa97b0c12fe0d4054e670403a16b6b834ddd
facebookresearch/deit 7e160fe43f0252d17191b71cbb5826254114ea5b
facebookresearch/dino 7c446df5b9f45747937fb0d72314eb9f7b66930a
facebookresearch/mae efb2a8062c206524e35e47d04501ed4f544c0ae8
facebookresearch/detr 29901c51d7fe8712168b8d0d64351170bc0f83e0
facebookresearch/ConvNeXt 048efcea897d999aed302f2639b6270aedf8d4c8
microsoft/Swin-Transformer f82860bfb5225915aca09c3227159ee9e1df874d
openai/guided-diffusion 22e0df8183507e13a7813f8d38d51b072ca1e67c
milesial/Pytorch-UNet 21d7850f2af30a9695bbeea75f3136aa538cfc4a
eriklindernoren/PyTorch-GAN 36d3c77e5ff20ebe0aeefd322326a134a279b93e
eriklindernoren/PyTorch-YOLOv3 1d621c8489e22c76ceb93bb2397ac6c8dfb5ceb7
yunjey/pytorch-tutorial 0500d3df5a2a8080ccfccbc00aca0eacc21818db
LIST
