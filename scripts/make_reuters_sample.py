"""Make the bundled sample corpus: 2,000 Reuters-21578 stories from ../shared/data (run once, output committed).

Keeps stories of 40-400 words, spread evenly over the collection, without the trailing
'Reuter' sign-off. Usage: python scripts/make_reuters_sample.py [SOURCE_JSONL] [OUT_JSONL]
"""

import json
import re
import sys
from pathlib import Path

SOURCE = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/reuters21578/reuters21578.jsonl")
OUT = Path(sys.argv[2] if len(sys.argv) > 2 else "corpora/reuters-sample/reuters_sample.jsonl")
COUNT = 2000
SIGN_OFF = re.compile(r"\s*reuter\s*$", re.IGNORECASE)

rows = []
with SOURCE.open(encoding="utf-8") as handle:
    for line in handle:
        row = json.loads(line)
        text = SIGN_OFF.sub("", row.get("text") or "").strip()
        if 40 <= len(text.split()) <= 400:
            rows.append({
                "newid": row["newid"], "date": row["date"], "title": row.get("title") or "",
                "topics": row["topics"], "places": row["places"], "text": text,
            })
step = len(rows) / COUNT
picked = [rows[int(i * step)] for i in range(COUNT)]
OUT.parent.mkdir(parents=True, exist_ok=True)
with OUT.open("w", encoding="utf-8") as handle:
    for row in picked:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
print(f"wrote {len(picked)} of {len(rows)} eligible stories to {OUT}")
