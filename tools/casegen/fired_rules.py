import json, sys, glob
from collections import defaultdict
from datetime import datetime
from pathlib import Path
sys.path.insert(0, "/work/main")
from cds.cards import card_extension
from cds.engine.registry import PackRegistry
from cds.evaluate_file import evaluate_request
from cds.engine.pack import compile_pack
regs = {}
out = {}
for p in sorted(glob.glob("/work/cases/gabapentin/*.json") + glob.glob("/work/cases/gabapentin-extra/*.json")):
    c = json.load(open(p))
    packs = tuple(c.get("packs") or ["gabapentin"]); prof = c.get("profile", "US")
    if (packs, prof) not in regs:
        r = PackRegistry(rules_dir=Path("rules"), pack_ids=list(packs), profile=prof); r.load(); regs[(packs, prof)] = r
    now = datetime.fromisoformat(c["now"].replace("Z", "+00:00"))
    st, resp = evaluate_request(c["request"], rules_dir=Path("rules"), pack_ids=packs, profile=prof, now=now, registry=regs[(packs, prof)])
    cards = []
    for card in resp.get("cards", []):
        ext = card_extension(card)
        cards.append({"category": card["source"]["topic"]["code"], "indicator": card["indicator"], "pack": ext.get("packId"), "rules": ext.get("ruleIds", []), "order": ext.get("orderId")})
    out[Path(p).stem] = {"profile": prof, "packs": packs, "cards": cards, "now": c["now"], "hook": c["request"].get("hook"), "policy": c.get("policy", "")}
json.dump(out, open("/tmp/fired.json", "w"), indent=1)
fired = defaultdict(set)
for k, v in out.items():
    for card in v["cards"]:
        if card["pack"] == "gabapentin":
            for r in card["rules"]:
                fired[v["profile"]].add(r)
for prof in ("US", "UK"):
    rules = set(compile_pack(Path("rules/gabapentin"), prof).rules)
    print(prof, "never fired:", sorted(rules - fired[prof]))
print(set(v["now"] for v in out.values()))
