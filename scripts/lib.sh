# Shared by scripts/*: install what bkfs needs on a Debian machine when it is missing.
need_pkgs() {
  local missing=()
  command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
  command -v getfattr >/dev/null 2>&1 || missing+=(attr)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "bkfs needs a Rust toolchain (cargo); install it with rustup (https://rustup.rs)" >&2
    exit 1
  fi
  if [ ! -e /dev/fuse ]; then
    echo "/dev/fuse is missing: load the fuse module (modprobe fuse) or run where FUSE is available" >&2
    exit 1
  fi
}
