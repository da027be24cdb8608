#!/usr/bin/env python3
"""Writes unicode_tables.cpp: the Unicode data the tokenizer needs.

The letter and number classes must be those of the regex engine inside the Hugging Face
`tokenizers` library (Oniguruma), which is newer than most Pythons' unicodedata
(tokenizers 0.23.2: Unicode 16.0). So they are read from that engine itself, where the
library is installed (the GPU machine has it), and the C++ is written from the dump:

    python3 src/tokenizer/gen_unicode_tables.py --dump-onig-classes classes.json   # needs tokenizers
    python3 src/tokenizer/gen_unicode_tables.py --onig-classes classes.json > src/tokenizer/unicode_tables.cpp

Without --onig-classes the classes come from this Python's unicodedata instead.

Tables (all sorted by code point, searched by binary search):
  kLetterRanges  [lo, hi] ranges of \\p{L} (general category L: Lu Ll Lt Lm Lo)
  kNumberRanges  [lo, hi] ranges of \\p{N} (general category N: Nd Nl No)
  kMarkRanges    [lo, hi] ranges of general category M (Mn Mc Me), from unicodedata; used
                 only for the \\w of single_word added tokens
  kCccRanges     [lo, hi, ccc] ranges of non-zero canonical combining class (for NFC)
  kDecomp        {cp | kComposes, a, b}: one level of canonical decomposition cp -> a b
                 (b = 0 for singletons); kComposes (bit 31) marks primary composites,
                 i.e. the pairs NFC recomposes (composition exclusions left out).
Hangul syllables are decomposed and composed arithmetically in code, not listed here.
White space (regex \\s, Rust char::is_whitespace) is the 25-code-point White_Space
property, written out by hand in unicode.cpp (Oniguruma's \\s matches exactly those 25).

NFC data from Python 3.11's unicodedata (Unicode 14.0) gave the same NFC as the library on
every single code point and on the test texts (checked against tokenizers 0.23.2).
"""
import argparse
import json
import sys
import unicodedata as ud

MAX = 0x110000


def ranges(pred):
    out, lo = [], None
    for c in range(MAX + 1):
        ok = c < MAX and pred(c)
        if ok and lo is None:
            lo = c
        elif not ok and lo is not None:
            out.append((lo, c - 1))
            lo = None
    return out


def emit(name, ctype, rows, per_line):
    print(f"const {ctype} {name}[] = {{")
    for i in range(0, len(rows), per_line):
        print("    " + " ".join("{" + ",".join(f"0x{v:X}" for v in r) + "}," for r in rows[i:i + per_line]))
    print("};")
    print(f"const size_t {name}Size = sizeof({name}) / sizeof({name}[0]);\n")


def dump_onig_classes(path):
    """Asks the tokenizers library's regex engine which code points \\p{L}, \\p{N} match."""
    from tokenizers import Regex, pre_tokenizers
    import tokenizers
    cps = [c for c in range(MAX) if not 0xD800 <= c <= 0xDFFF]
    text = "\x00".join(chr(c) for c in cps)  # NUL is neither class: each match is one code point
    out = {"tokenizers": tokenizers.__version__}
    for name, pattern in (("L", r"\p{L}"), ("N", r"\p{N}")):
        pieces = pre_tokenizers.Split(Regex(pattern), behavior="isolated").pre_tokenize_str(text)
        out[name] = sorted(ord(p) for p, _ in pieces if len(p) == 1 and p != "\x00")
    with open(path, "w") as f:
        json.dump(out, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onig-classes", help="JSON from --dump-onig-classes")
    ap.add_argument("--dump-onig-classes", metavar="OUT", help="write the classes of the installed tokenizers")
    args = ap.parse_args()
    if args.dump_onig_classes:
        dump_onig_classes(args.dump_onig_classes)
        return
    cat = lambda c: ud.category(chr(c))
    if args.onig_classes:
        with open(args.onig_classes) as f:
            onig = json.load(f)
        lset, nset = set(onig["L"]), set(onig["N"])
        letters = ranges(lambda c: c in lset)
        numbers = ranges(lambda c: c in nset)
        source = f"the regex engine of tokenizers {onig.get('tokenizers', '?')} (Oniguruma)"
    else:
        letters = ranges(lambda c: cat(c)[0] == "L")
        numbers = ranges(lambda c: cat(c)[0] == "N")
        source = f"unicodedata, Unicode {ud.unidata_version}"
    marks = ranges(lambda c: cat(c)[0] == "M")
    ccc_rows, c = [], 0
    while c < MAX:
        k = ud.combining(chr(c))
        if k:
            lo = c
            while c + 1 < MAX and ud.combining(chr(c + 1)) == k:
                c += 1
            ccc_rows.append((lo, c, k))
        c += 1
    decomp = []
    for c in range(MAX):
        if 0xAC00 <= c <= 0xD7A3:
            continue  # Hangul: arithmetic
        d = ud.decomposition(chr(c))
        if not d or d.startswith("<"):
            continue  # none, or a compatibility mapping (NFKC only)
        parts = [int(x, 16) for x in d.split()]
        assert len(parts) in (1, 2), (hex(c), d)
        a, b = parts[0], parts[1] if len(parts) == 2 else 0
        composes = len(parts) == 2 and ud.normalize("NFC", chr(a) + chr(b)) == chr(c)
        decomp.append((c | (0x80000000 if composes else 0), a, b))

    print("// Generated by src/tokenizer/gen_unicode_tables.py. Do not edit: rerun the script (see there).")
    print(f"// Letters and numbers: {source}.")
    print(f"// Marks, combining classes, decompositions: Python {sys.version.split()[0]}'s unicodedata, Unicode {ud.unidata_version}.")
    print("#include \"tokenizer/unicode.h\"\n\nnamespace obr::unicode::tables {\n")
    print(f"const char* const kClassSource = \"{source}\";")
    print(f"const char* const kUnicodeVersion = \"{ud.unidata_version}\";\n")
    emit("kLetterRanges", "CpRange", letters, 6)
    emit("kNumberRanges", "CpRange", numbers, 6)
    emit("kMarkRanges", "CpRange", marks, 6)
    emit("kCccRanges", "CccRange", ccc_rows, 5)
    emit("kDecomp", "DecompEntry", decomp, 5)
    print("}  // namespace obr::unicode::tables")


if __name__ == "__main__":
    main()
