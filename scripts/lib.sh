# Shared by scripts/*: install what bkfs needs on a Debian machine when it is missing.
need_pkgs() {
  local missing=()
  command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
  command -v getfattr >/dev/null 2>&1 || missing+=(attr)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v rsync >/dev/null 2>&1 || missing+=(rsync)
  command -v unzip >/dev/null 2>&1 || missing+=(unzip)
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

# Points HOME and XDG_CACHE_HOME at the empty directory $1 (no test may touch the user's
# home), keeping cargo and rustup where they were. Pair it with check_home_untouched.
isolate_home() {
  export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
  export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
  export PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"
  mkdir -p "$1"
  export HOME="$1" XDG_CACHE_HOME="$1/.cache"
}

# Fails when anything was created under the isolated HOME.
check_home_untouched() {
  local leaks
  leaks="$(find "$HOME" -mindepth 1 | head -n 5)"
  if [ -n "$leaks" ]; then
    echo "tests wrote into HOME/XDG_CACHE_HOME ($HOME):" >&2
    echo "$leaks" >&2
    return 1
  fi
}
