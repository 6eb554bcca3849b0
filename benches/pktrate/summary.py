#!/usr/bin/env python3
"""Table of a benches/pktrate/run.sh results file: per scenario and peer the
harness's delivered pps and pkts per DUT core-second (min/median/max), and
twill's medians as ratios of each peer's measured in the same invocation."""
import re, sys

rows = []
for line in open(sys.argv[1]):
    m = re.match(r"scenario=(\S+) peer=(\S+) check=(\S+) own_cpu=\S+ pkts_per_dut_cpu_s=(\S*) RESULT (.*)", line)
    if not m:
        continue
    sc, peer, chk, own, rest = m.groups()
    if chk != "ok":
        peer += " (check step saw nothing at the sink)"
    f = {}
    try:
        f["own"] = tuple(float(x) for x in own.split("/"))
    except ValueError:
        f["own"] = None
    for k in ("delivered_pps\\(min/med/max\\)", "offered_pps", "dut_cpu1_pct", "pkts_per_dut_core_s"):
        mm = re.search(k + r"=([0-9.na]+)/([0-9.na]+)/([0-9.na]+)", rest)
        f[k.split("\\")[0]] = tuple(float(x) for x in mm.groups()) if mm else None
    note = rest.split("|")[-1].strip() if rest.count("|") >= 3 else ""
    rows.append((sc, peer, f, note))

def k(v):
    return "n/a" if v is None or v != v else f"{v / 1e3:.0f}k"

print("\n| scenario | DUT | delivered pps med (min-max) | offered med | CPU1 % med | pkts per DUT core-s med (min-max) | pkts per DUT-own CPU-s med (min-max) | note |")
print("|---|---|---|---|---|---|---|---|")
for sc, peer, f, note in rows:
    d, o, c, e, w = f["delivered_pps"], f["offered_pps"], f["dut_cpu1_pct"], f["pkts_per_dut_core_s"], f["own"]
    if d is None:
        print(f"| {sc} | {peer} | failed | | | | | |")
        continue
    ws = f"**{k(w[1])}** ({k(w[0])}-{k(w[2])})" if w else "n/a"
    print(f"| {sc} | {peer} | **{k(d[1])}** ({k(d[0])}-{k(d[2])}) | {k(o[1]) if o else ''} | "
          f"{c[1] if c else ''} | **{k(e[1])}** ({k(e[0])}-{k(e[2])}) | {ws} | {note} |")
print()
for sc in dict.fromkeys(r[0] for r in rows):
    tw = [r for r in rows if r[0] == sc and r[1].startswith("twill") and r[2]["delivered_pps"]]
    peers = [r for r in rows if r[0] == sc and not r[1].startswith("twill") and r[2]["delivered_pps"]]
    for t in tw:
        for p in peers:
            td, pd = t[2]["delivered_pps"][1], p[2]["delivered_pps"][1]
            te, pe = t[2]["pkts_per_dut_core_s"][1], p[2]["pkts_per_dut_core_s"][1]
            tw_, pw_ = t[2]["own"], p[2]["own"]
            own = (f", pkts per DUT-own CPU-s {tw_[1] / pw_[1]:.2f}x"
                   if tw_ and pw_ and pw_[1] else "")
            print(f"RATIO {sc}: {t[1]} / {p[1]}: delivered {td / pd if pd else float('nan'):.2f}x, "
                  f"pkts per DUT core-s {te / pe if pe else float('nan'):.2f}x{own}")
