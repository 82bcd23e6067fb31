# shellcheck shell=bash
# Shared helpers of the test bed scripts (up, status, down). Sourced, not run.
set -euo pipefail

TESTBED_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$TESTBED_DIR/../.." && pwd)
STRATA_CACHE=${STRATA_CACHE:-$HOME/.cache/strata-ops}
HOST_IMAGE_REPO=strata-ops-host
LAB_NETWORK=strata-lab
# Lab hosts of inventories/lab: names must match that inventory.
LAB_HOSTS=(strata-lab-1 strata-lab-2)
# The pool each lab host has (strata_pool in inventories/lab), as a file-backed zfs-fuse pool.
LAB_POOL=lab
LAB_POOL_SIZE=1G
CRIU_SUITE=${CRIU_SUITE:-trixie}
ZFS_POOL_DIR=$STRATA_CACHE/zpool
# The lab Kubernetes cluster's kubeconfig (mode 0600), written by controlplane/start.
LAB_KUBECONFIG=$STRATA_CACHE/controlplane/strata-lab.kubeconfig
TESTBED_POOL=strata-testbed
# The CRI runtime of the pod checkpoint tests (cri/start): containerd on a socket of its own.
CRI_SOCKET=/run/strata-cri/containerd.sock
CRI_CONFIG=$STRATA_CACHE/cri/config.toml
CRICTL=$STRATA_CACHE/bin/crictl
CRI_POD_SUBNET=10.213.0.0/24
# A second one, containerd 1.7 as Debian trixie ships it (what k3s and MicroK8s users run beside
# bookworm's 1.6): unpacked with dpkg -x, on a socket, root and bridge of its own (cri/start 1.7).
CRI17_SUITE=trixie
CRI17_SOCKET=/run/strata-cri17/containerd.sock
CRI17_CONFIG=$STRATA_CACHE/cri17/config.toml
CRI17_POD_SUBNET=10.215.0.0/24
# The lab cluster's one real node (node/start): a kubelet on containerd 2.x, beside the kwok nodes.
NODE_NAME=strata-node-1
NODE_DIR=/run/strata-node
NODE_SOCKET=$NODE_DIR/containerd.sock
NODE_POD_SUBNET=10.214.0.0/24
NODE_KUBELET_URL=https://127.0.0.1:10250
# The node's InternalIP, where the API server reaches its kubelet (exec, logs): the kubelet
# refuses a loopback node IP ("nodeIP can't be loopback address") and then reports no address
# at all. An interface of this machine of its own carries it (node/start).
NODE_IP=10.214.1.1
NODE_IP_LINK=strata-nodeip
CONTAINERD2_VERSION=v2.3.7

# Debian packages the host needs for the tests; each line: package (why).
HOST_PACKAGES=(
  docker.io      # the engine for lab hosts and molecule
  zfs-fuse       # real zpool/zfs on file-backed pools
  debootstrap    # builds the systemd host image
  rsync aria2 zstd lz4 curl ca-certificates iproute2 procps
  nginx-light    # serves snapshot archives with Range and limit_rate (snapshot tests)
  libnet1 libnftables1 libnl-3-200 libprotobuf-c1 libbsd0 libgnutls30  # CRIU 4 shared libraries
  python3-protobuf  # crit (CRIU's image tool, from the same suite as CRIU) decodes with it
  containerd        # the CRI runtime of the pod checkpoint tests (docker.io brings it too)
  containernetworking-plugins  # its pods' network (bridge, host-local, loopback)
  qemu-system-x86 busybox-static  # the dirty-tracking guest of CRIU's pre-dump (vm/build)
)

say() { printf 'testbed: %s\n' "$*" >&2; }
die() { printf 'testbed: ERROR: %s\n' "$*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] || die "must run as root (apt-get, dockerd and zfs-fuse need it): sudo $0"
}

apt_ready=0
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  if [ $apt_ready = 0 ]; then
    apt-get update -qq || die "apt-get update failed: check the Debian mirror in /etc/apt/sources.list"
    apt_ready=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed: run it by hand to see why"
}

docker_answers() { docker info >/dev/null 2>&1; }
cri_answers() { ctr --address "${1:-$CRI_SOCKET}" version >/dev/null 2>&1; }
# Where cri/start 1.7 unpacked trixie's containerd: its containerd, ctr and runc shim.
containerd17_bin() { echo "$STRATA_CACHE/containerd-1.7/usr/bin"; }
containerd2_bin() { echo "$STRATA_CACHE/containerd-$CONTAINERD2_VERSION/bin"; }
node_answers() { "$(containerd2_bin)/ctr" --address "$NODE_SOCKET" version >/dev/null 2>&1; }

# An apt configuration of its own for another Debian suite, so that packages of
# trixie/sid can be downloaded and unpacked with dpkg -x without touching the host's apt.
suite_apt() {
  local suite=$1; shift
  local d=$STRATA_CACHE/apt-$suite
  mkdir -p "$d/lists/partial" "$d/archives/partial"
  [ -f "$d/sources.list" ] || echo "deb http://deb.debian.org/debian $suite main contrib" >"$d/sources.list"
  "$@" -q -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$d/lists" -o Dir::Cache="$d" -o Debug::NoLocking=1 \
    -o APT::Sandbox::User=root
}

criu_version_of() { "$1" --version 2>/dev/null | awk '/^Version:/ {print $2}'; }

# The CRIU wrapper the tests and dockerd use: $STRATA_CACHE/bin/criu; crit beside it.
criu_wrapper() { echo "$STRATA_CACHE/bin/criu"; }
crit_wrapper() { echo "$STRATA_CACHE/bin/crit"; }

# An image's tag is the hash of its recipe directory: any change to it builds a new image.
recipe_hash() {
  (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-12
}
host_image() { echo "$HOST_IMAGE_REPO:$(recipe_hash "$TESTBED_DIR/image")"; }
cri_image() { echo "docker.io/library/strata-cri-workload:$(recipe_hash "$TESTBED_DIR/cri/workload")"; }

# The options every systemd test host runs with (molecule uses the same, see molecule/).
host_run_opts() {
  # SIGRTMIN+3 is what systemd as PID 1 takes as "shut down cleanly".
  echo --stop-signal SIGRTMIN+3 --cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --tmpfs /run --tmpfs /run/lock -v /sys/fs/cgroup:/sys/fs/cgroup:rw --cgroupns=host --device /dev/fuse
}
