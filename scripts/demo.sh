#!/usr/bin/env bash
# The main job, end to end on this machine: the example province's exchange axis running on a local
# RabbitMQ. Documents go province -> district -> commune, commune -> province and province -> every
# commune of a district; recipients pull their inboxes and the district sends statuses 03 and 06 back;
# the status table shows each recipient's state. Then the national axis (a mock one, run here): a
# document leaves for a ministry, and one arrives from a second province running its own bus. Before
# all that, the offline checks: validation, signing, three hops and tamper detection.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/services.sh >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
export BUS_HTTP__DRAIN_S=0   # no load balancer in front of the demo: stop at once
out=demo-out
config=config/example-province.toml
config2=config/example-province-2.toml
rm -rf "$out"; mkdir -p "$out"

step() { printf '\n== %s\n' "$*"; }
sender_of() {
  python -c 'import sys; from lxml import etree; from bus.checks import sender_text; \
    print(sender_text(etree.parse(sys.argv[1]).getroot()))' "$1"
}

step "1. Development PKI for the example province and a second one (fresh keys)"
bus pki init --topology "$config" --out "$out/pki"
bus pki init --topology "$config2" --out "$out/pki-h98"

step "2. Validate the example envelopes (schema + business checks)"
bus validate examples/*.edxml

step "3. Sign each envelope as its sending agency"
for file in examples/*.edxml; do
  sender=$(sender_of "$file")
  pki="$out/pki"; [[ "$sender" == *.H98 ]] && pki="$out/pki-h98"
  [ -f "$pki/nodes/$sender.key" ] || continue  # a ministry's envelope: not ours to sign
  bus sign --key "$pki/nodes/$sender.key" --cert "$pki/nodes/$sender.pem" \
    "$file" -o "$out/$(basename "$file" .edxml).signed.edxml"
done

step "4. Three hops append their trace headers; the sender's signature must still verify"
mkdir -p "$out/hops"
python - "$out" <<'PY'
import sys
from pathlib import Path
from lxml import etree
from bus.trace import append_trace
out = Path(sys.argv[1])
for path in sorted(out.glob("*.signed.edxml")):
    tree = etree.parse(str(path))
    for hop in ("000.00.90.H99", "000.00.00.G22", "000.00.90.H98"):
        append_trace(tree, hop)
    target = out / "hops" / path.name
    target.write_bytes(etree.tostring(tree, encoding="UTF-8", xml_declaration=True))
    print(f"{target}: 3 trace headers appended")
PY
bus verify --ca "$out/pki/ca.pem" --ca "$out/pki-h98/ca.pem" "$out"/hops/*.signed.edxml

step "5. A tampered envelope is refused (exit status 1 expected)"
first=$(ls "$out"/hops/*.signed.edxml | grep -v tinh-thu | head -n 1)
sed 's/<edXML:Subject>/<edXML:Subject>[ĐÃ SỬA] /' "$first" > "$out/tampered.edxml"
if bus verify --ca "$out/pki/ca.pem" "$out/tampered.edxml"; then
  echo "DEMO FAILED: a tampered envelope verified"; exit 1
fi
echo "refused, as it must be"

pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done' EXIT
wait_up() {  # wait_up URL PID LOG
  for _ in $(seq 1 60); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3: the process exited:"; cat "$3"; exit 1; }
    sleep 0.5
  done
  echo "not up after 30 s: $1"; cat "$3"; exit 1
}

step "6. Start the mock national axis, this province's bus, and a second province's bus"
bus mock-axis --config config/mock-axis.toml --port 9090 --database "sqlite+aiosqlite:///$out/mock-axis.db" \
  >"$out/mock-axis.log" 2>&1 &
pids+=($!); wait_up http://127.0.0.1:9090/_mock/faults "$!" "$out/mock-axis.log"
echo "mock national axis on http://127.0.0.1:9090 (systems: tỉnh Mẫu, tỉnh Thử, Bộ Tài chính)"
bus serve --config "$config" --json-logs >"$out/serve.log" 2>&1 &
pids+=($!); url="http://127.0.0.1:8080"; wait_up "$url/healthz" "$!" "$out/serve.log"
echo "bus serve --config $config is up on $url (OpenAPI: $url/v1/openapi.json; log: $out/serve.log)"
bus serve --config "$config2" --json-logs >"$out/serve-h98.log" 2>&1 &
pids+=($!); wait_up "http://127.0.0.1:8081/healthz" "$!" "$out/serve-h98.log"
echo "bus serve --config $config2 is up on http://127.0.0.1:8081 (log: $out/serve-h98.log)"

send() {  # send AGENCY FILE -> prints the bus id
  local id; id=$(bus send --config "$config" --as "$1" "$2")
  printf '%s sent %s -> bus id %s\n' "$1" "$(basename "$2")" "$id" >&2
  echo "$id"
}
signed() { echo "$out/$(basename "$1" .edxml).signed.edxml"; }

step "7. Province -> district and commune (signed: the People's Committee must sign)"
send 000.00.00.H99 "$(signed examples/cong-van-tinh-gui-huyen-xa.edxml)" >/dev/null
step "8. District -> its communes, commune -> province, province -> every commune of Đồng Xuân"
send 000.00.21.H99 examples/huyen-chuyen-xa.edxml >/dev/null
send 000.01.21.H99 examples/xa-gui-tinh.edxml >/dev/null
send 000.00.00.H99 "$(signed examples/tinh-gui-cac-xa-huyen-dong-xuan.edxml)" >/dev/null
echo "sending the first document again (must be refused as a duplicate, exit status 1):"
if bus send --config "$config" --as 000.00.00.H99 "$(signed examples/cong-van-tinh-gui-huyen-xa.edxml)"; then
  echo "DEMO FAILED: a duplicate was accepted"; exit 1
fi
sleep 1

step "9. Recipients pull their inboxes (fetch, then acknowledge)"
bus inbox --config "$config" --as 000.01.21.H99 --fetch "$out/inbox/xuan-phuoc" --ack done
bus inbox --config "$config" --as 000.03.21.H99 --fetch "$out/inbox/xuan-lanh" --ack processing
bus inbox --config "$config" --as 000.00.21.H99 --fetch "$out/inbox/dong-xuan" --ack done
echo "what Xuân Phước received verifies (the province's signature and the bus's):"
bus verify --ca "$out/pki/ca.pem" "$out"/inbox/xuan-phuoc/*.edxml

step "10. The district answers the province: status 03 (registered), then 06 (completed)"
send 000.00.21.H99 examples/trang-thai-03-huyen-gui-tinh.edxml >/dev/null
send 000.00.21.H99 examples/trang-thai-06-huyen-gui-tinh.edxml >/dev/null
sleep 1
bus inbox --config "$config" --as 000.00.00.H99 --fetch "$out/inbox/tinh" --ack done

step "11. Delivery status, per recipient"
bus status --config "$config" "000.00.00.H99,2026/11/20,1234/UBND-KGVX"
echo
bus status --config "$config" "000.00.00.H99,2026/11/23,1250/UBND-NC"

step "12. Leaving the province: Sở Tài chính reports to Bộ Tài chính (a ministry) through the axis"
send 000.00.02.H99 examples/so-tai-chinh-gui-bo-tai-chinh.edxml >/dev/null
python - <<'PY'
import asyncio, time
from adapters.national_axis.client import NationalAxisClient

async def main() -> None:
    # The ministry's own system, as the national axis's SDK would call it.
    ministry = NationalAxisClient("http://127.0.0.1:9090", "000.00.00.G12", "demo-only-axis-G12-secret")
    deadline = time.monotonic() + 30
    while not (items := await ministry.received()) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    for item in items:
        body = await ministry.get_edoc(item.doc_id)
        print(f"Bộ Tài chính sees on the national axis: DocId {item.doc_id} from {item.sender}, {len(body)} bytes")
        await ministry.update_status(item.doc_id, "done")
    await ministry.close()
    if not items:
        raise SystemExit("DEMO FAILED: nothing reached the ministry")

asyncio.run(main())
PY
bus status --config "$config" "000.00.02.H99,2026/11/24,512/STC-NS"

step "13. Arriving from another province: tỉnh Thử (its own bus) writes to the People's Committee"
bus send --config "$config2" --as 000.00.00.H98 "$(signed examples/tinh-thu-gui-tinh-mau.edxml)"
for _ in $(seq 1 60); do
  bus inbox --config "$config" --as 000.00.00.H99 2>&1 | grep -q "000.00.00.H98" && break
  sleep 0.5
done
bus inbox --config "$config" --as 000.00.00.H99 --fetch "$out/inbox/tu-tinh-thu" --ack done
echo "it verifies against tỉnh Thử's CA (its sender's signature and both axes'):"
bus verify --ca "$out/pki/ca.pem" --ca "$out/pki-h98/ca.pem" "$out"/inbox/tu-tinh-thu/*.edxml
bus status --config "$config2" "000.00.00.H98,2026/11/25,77/UBND-KT"

step "14. What an operator sees: readiness, metrics, dead letters, the dashboard"
curl -fsS "$url/readyz"; echo
curl -fsS "$url/metrics" | grep -E '^bus_(envelopes_accepted_total|deliveries\{state="(done|sent-to-axis)"\}|relay_out_sent_total)'
bus deadletters --config "$config"
echo "dashboard: $url/dashboard/ (login van.hanh / demo-only-password) while bus serve runs:"
echo "  bus serve --config $config"

step "14b. Evidence: the audit log checked, exported and checked offline"
bus audit checkpoint --config "$config"
bus audit verify --config "$config"
bus audit export --config "$config" -o "$out/audit.zip"
echo "the archive, checked with the CA certificate alone (as on another machine):"
bus audit verify "$out/audit.zip" --ca "$out/pki/ca.pem"

if [ -d ../shared/interop ]; then
  step "15. Real envelopes from ../shared/interop (see README: which pass and why not)"
  bus validate ../shared/interop/*/*.edxml 2>&1 || true
fi
printf '\nDemo finished: outputs in %s/ (bus serve stops now)\n' "$out"
