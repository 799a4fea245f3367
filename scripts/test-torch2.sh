#!/usr/bin/env bash
# The trainer's pytest suite again on current PyTorch 2.x and transformers (CPU), in a Debian sid
# chroot: Debian stable only has torch 1.13, and no PyPI is reachable here. This is what checks,
# without a GPU, the paths a GPU runs: logits against `transformers` for every architecture, SDPA,
# FlexAttention document masks, torch.compile'd blocks, fused AdamW, bf16 autocast.
#
#   bash scripts/test-torch2.sh [pytest args]     # needs root (debootstrap, chroot, mount)
#   bash scripts/test-torch2.sh --run CMD [ARGS]  # any command, run from the repo root in there
#
# The chroot is built once (~3 min, ~3 GB) under $OPENTUNE_TORCH2_ROOT and reused. A machine that
# cannot build it (not root, no mirror) skips with a message; a failing test fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=${OPENTUNE_TORCH2_ROOT:-/var/tmp/opentune-torch2}
mirror=${OPENTUNE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# the mirror here is a snapshot whose sid Release file is past its Valid-Until date
apt_opts=(-o Acquire::Check-Valid-Until=false -o Acquire::Retries=3)
packages=(python3-torch python3-transformers python3-safetensors python3-numpy python3-pytest
          libopenblas0-pthread g++ libtorch-dev libsleef-dev)  # the last three: torch.compile on CPU

skip() { echo "test-torch2: SKIPPED: $*" >&2; exit 0; }

build_root() {
  [ "$(id -u)" = 0 ] || skip "needs root to build the chroot"
  command -v debootstrap >/dev/null || { apt-get install -y -qq debootstrap >/dev/null 2>&1 || skip "no debootstrap"; }
  echo "test-torch2: building a Debian sid chroot in $root (once)"
  # a run killed mid-way leaves its mounts (/dev, the repo): never rm -rf through them
  grep -q " $root/" /proc/mounts && skip "mounts left under $root: umount them first"
  rm -rf "$root"
  debootstrap --variant=minbase sid "$root" "$mirror" >/tmp/opentune-torch2-debootstrap.log 2>&1 \
    || skip "debootstrap failed (see /tmp/opentune-torch2-debootstrap.log)"
  chroot "$root" apt-get "${apt_opts[@]}" update -qq >/dev/null || skip "apt-get update failed in the chroot"
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -qq \
    --no-install-recommends "${packages[@]}" >/tmp/opentune-torch2-apt.log 2>&1 \
    || skip "installing PyTorch in the chroot failed (see /tmp/opentune-torch2-apt.log)"
  touch "$root/.opentune-ready"
}

mounted=()
mount_in() {  # mount_in <target> <mount args…>; undone on exit
  mkdir -p "$1"
  mountpoint -q "$1" && return 0
  mount "${@:2}" "$1" || skip "cannot mount $1"
  mounted=("$1" "${mounted[@]}")
}
unmount_all() { for m in "${mounted[@]}"; do umount -l "$m" || true; done; }

exec 9>"$root.lock"
flock 9  # one run at a time: a second run's exit would unmount the first one's /repo
[ -f "$root/.opentune-ready" ] || build_root
trap unmount_all EXIT
mount_in "$root/proc" -t proc proc
mount_in "$root/dev" --bind /dev
mount_in "$root/tmp" -t tmpfs tmpfs
mount_in "$root/repo" --bind "$repo"

# Debian's libtorch links inductor's CPU kernels without -lsleef: their load probe fails, inductor
# thinks the CPU has no vector ISA and FlexAttention refuses to compile. Preloading sleef fixes it.
sleef=$(ls "$root"/usr/lib/x86_64-linux-gnu/libsleef.so.3 2>/dev/null | sed "s|^$root||" || true)
in_root=(chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 LD_PRELOAD="$sleef")
if [ "${1:-}" = --run ]; then
  "${in_root[@]}" bash -c 'cd /repo && exec "$@"' run "${@:2}"
  exit
fi
"${in_root[@]}" bash -c 'cd /repo/trainer && python3 -c "import torch, transformers; print(\"test-torch2: torch\", torch.__version__, \"transformers\", transformers.__version__)" && python3 -m pytest -q -p no:cacheprovider "$@"' \
  test-torch2 "$@"
