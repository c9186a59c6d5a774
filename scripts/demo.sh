#!/usr/bin/env bash
# The main job, end to end on this machine: a development PKI for the example province, then the
# example envelopes validated, signed by their sending agency, passed through three hops, verified,
# and a tampered copy refused. Real samples from ../shared/interop are validated when present.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
out=demo-out
rm -rf "$out"; mkdir -p "$out"

step() { printf '\n== %s\n' "$*"; }

step "1. Development PKI for the example province (fresh keys)"
bus pki init --topology config/example-province.toml --out "$out/pki"

step "2. Validate the example envelopes (schema + business checks)"
bus validate examples/*.edxml

step "3. Sign each envelope as its sending agency"
for file in examples/*.edxml; do
  sender=$(python -c 'import sys; from lxml import etree; from bus.checks import sender_text; \
    print(sender_text(etree.parse(sys.argv[1]).getroot()))' "$file")
  bus sign --key "$out/pki/nodes/$sender.key" --cert "$out/pki/nodes/$sender.pem" \
    "$file" -o "$out/$(basename "$file" .edxml).signed.edxml"
done

step "4. Three hops append their trace headers; the sender's signature must still verify"
python - "$out" <<'PY'
import sys
from pathlib import Path
from lxml import etree
from bus.trace import append_trace
for path in sorted(Path(sys.argv[1]).glob("*.signed.edxml")):
    tree = etree.parse(str(path))
    for hop in ("000.00.90.H99", "000.00.00.G22", "000.00.90.H98"):
        append_trace(tree, hop)
    path.write_bytes(etree.tostring(tree, encoding="UTF-8", xml_declaration=True))
    print(f"{path}: 3 trace headers appended")
PY
bus verify --ca "$out/pki/ca.pem" "$out"/*.signed.edxml

step "5. A tampered envelope is refused (exit status 1 expected)"
first=$(ls "$out"/*.signed.edxml | head -n 1)
sed 's/<edXML:Subject>/<edXML:Subject>[ĐÃ SỬA] /' "$first" > "$out/tampered.edxml"
if bus verify --ca "$out/pki/ca.pem" "$out/tampered.edxml"; then
  echo "DEMO FAILED: a tampered envelope verified"; exit 1
fi
echo "refused, as it must be"

if [ -d ../shared/interop ]; then
  step "6. Real envelopes from ../shared/interop (see README: which pass and why not)"
  bus validate ../shared/interop/*/*.edxml 2>&1 || true
fi
printf '\nDemo finished: outputs in %s/\n' "$out"
