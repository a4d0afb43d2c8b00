# shellcheck shell=bash
# Sourced by the GPU scripts: where a build's binaries are. A bundle is a folder holding bin/ and
# libs/ (../shared/tools/bundle-runtime-libs; reference/ for the CUDA tests), or such a folder
# packed as .tar.xz / .tgz / .tar.gz. Scripts take their bundles as arguments: no default paths.

# use_bundle PATH NAME: makes /tmp/tp-NAME the bundle at PATH (a link to a folder, or unpacked).
use_bundle() {
  local path=$1 dest=/tmp/tp-$2
  rm -rf "$dest"
  if [ -d "$path" ]; then
    ln -s "$(cd "$path" && pwd)" "$dest"
  elif [ -f "$path" ]; then
    mkdir -p "$dest" && tar xf "$path" -C "$dest" || return 1
  else
    echo "no bundle at '$path' (expected a folder with bin/ and libs/, or a tarball of one)" >&2
    return 1
  fi
  [ -d "$dest/bin" ] || { echo "bundle '$path' has no bin/" >&2; return 1; }
}
