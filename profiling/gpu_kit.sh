#!/usr/bin/env bash
# Packs what the GPU machine lacks for building mnist: the Debian packages the build needs
# (CLI11, nlohmann-json, GoogleTest's source, OpenBLAS's, zlib's, libpng's and libjpeg-turbo's
# static libraries) and cuDNN's
# headers, as installed on this machine, into .gpu-kit/deps.tar.gz (git ignores it; ~14 MB).
# The GPU machine has the CUDA toolkit, cuDNN, CMake, ninja and Python wheels but no Debian
# packages and no network; profiling/gpu_session.sh unpacks the kit there and builds against
# it. Run it after .ci/setup (which installs them):
#
#   bash profiling/gpu_kit.sh
#   then, there, in one call with data/mnist and .gpu-kit copied along:
#     bash profiling/gpu_session.sh --budget 540
#
# Only the packages' headers, static libraries and CMake/pkg-config files go in, at their /usr
# paths; shared libraries stay out (the binaries must not need Debian's).
# The tree travels to the GPU machine without .git, so the kit also says what it was made from:
# .gpu-kit/COMMIT (HEAD, and whether tracked files differed from it) and .gpu-kit/tree.sha256
# (every tracked file's checksum then), which gpu_session.sh prints and checks there. Run this
# again after editing, or gpu_session.sh reports the edited files as changed since the kit.
set -euo pipefail
cd "$(dirname "$0")/.."

# googletest is GoogleTest's source (/usr/src/googletest, headers included): the GPU machine
# builds it with its own compiler rather than link the libgtest.a (libgtest-dev) built by this one's.
packages=(libcli11-dev nlohmann-json3-dev googletest libopenblas-pthread-dev zlib1g-dev libpng-dev
          libjpeg62-turbo-dev)
list=$(mktemp)
trap 'rm -f "$list"' EXIT
for package in "${packages[@]}"; do
  if ! files=$(dpkg -L "$package" 2>/dev/null); then
    echo "gpu_kit: $package is not installed; run bash .ci/setup first" >&2
    exit 1
  fi
  # Regular files and links, not folders; no docs, no shared libraries (.so, .so.N).
  while IFS= read -r path; do
    [[ -f $path || -L $path ]] || continue
    [[ $path == /usr/share/doc/* || $path == /usr/share/man/* || $path == /usr/share/lintian/* ]] && continue
    [[ $path =~ \.so(\.[0-9.]+)?$ ]] && continue
    echo "${path#/}"
  done <<<"$files" >>"$list"
done

# cuDNN 9's headers from this machine's toolkit, for a GPU machine whose cuDNN came without them
# (gpu_session.sh uses them only when it finds no cudnn.h there); the API is stable within 9.x.
cudnn_headers=(/usr/local/cuda/include/cudnn*.h)
if [[ -f ${cudnn_headers[0]} ]]; then
  printf '%s\n' "${cudnn_headers[@]#/}" >>"$list"
else
  echo "gpu_kit: no cuDNN headers in /usr/local/cuda/include; the kit goes without them" >&2
fi

mkdir -p .gpu-kit
tar -czf .gpu-kit/deps.tar.gz -C / --files-from="$list"
{
  echo "made $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m) from:"
  for package in "${packages[@]}"; do dpkg-query -W -f='  ${Package} ${Version}\n' "$package"; done
  grep -hE '#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) ' /usr/local/cuda/include/cudnn_version.h 2>/dev/null | sed 's/^/  /'
} >.gpu-kit/MANIFEST

# What the tree was when the kit was made (gpu_session.sh's summary names it; no git there).
if commit=$(git rev-parse HEAD 2>/dev/null); then
  changed=$(git status --porcelain --untracked-files=no | awk '{print $NF}')
  {
    echo "commit $commit"
    if [[ -n $changed ]]; then
      echo "dirty yes: $(wc -l <<<"$changed") tracked file(s) differ from HEAD: $(paste -sd " " <<<"$changed")"
    else
      echo "dirty no"
    fi
    echo "made $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >.gpu-kit/COMMIT
  # Checksums of the tracked files as they are now (deleted ones left out), for the GPU machine
  # to tell whether the tree it got is the one this names.
  git ls-files -z | while IFS= read -r -d '' path; do if [[ -f $path ]]; then printf '%s\0' "$path"; fi; done |
    xargs -0 sha256sum >.gpu-kit/tree.sha256
else
  printf 'commit unknown (no git here)\nmade %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >.gpu-kit/COMMIT
  rm -f .gpu-kit/tree.sha256
fi
echo "gpu_kit: .gpu-kit/deps.tar.gz, $(du -h .gpu-kit/deps.tar.gz | cut -f1), $(wc -l <"$list") files of ${packages[*]}"
echo "gpu_kit: .gpu-kit/COMMIT: $(head -n2 .gpu-kit/COMMIT | tr '\n' ' ')"
