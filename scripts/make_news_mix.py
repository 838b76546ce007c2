"""Make the bundled news-mix corpus from ../shared/data (run once, output committed).

Reuters-21578 (1987 newswire) covers business news well, world news thinly (its topic codes are
economic; political stories are a minority of the untagged ones) and holds almost no sports or
science stories, so AG News's Sports and Sci/Tech labels had nothing to retrieve and World had about
a hundred usable passages. This mix takes the Reuters stories with economic topics, and of the
untagged ones those that read most like political news (more political words, such as minister,
troops or election, than economic ones, such as shares or dlrs; a transparent keyword score, printed);
it adds 20 Newsgroups `train` posts from the sports, science and computing groups and from
talk.politics.mideast (international politics, for World), with headers, quoted
replies, signatures and e-mail addresses stripped (the sklearn-style cleaning the dataset's README
describes), keeping the Subject line as the title. Only `train` posts are used: the 20 Newsgroups
test split never reaches a corpus.

It also writes the demo's small mix, `corpora/news-mix-small/news_mix_small.jsonl`: every third
document of the full mix (each source and group in the same proportion, a third of the embedding
time), which `scripts/demo.sh` indexes.

Usage: python scripts/make_news_mix.py [SHARED_DATA_DIR] [OUT_JSONL] [SMALL_OUT_JSONL]
"""

import gzip
import json
import re
import sys
from pathlib import Path

DATA = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
OUT = Path(sys.argv[2] if len(sys.argv) > 2 else "corpora/news-mix/news_mix.jsonl")
SMALL_OUT = Path(sys.argv[3] if len(sys.argv) > 3 else "corpora/news-mix-small/news_mix_small.jsonl")
SMALL_EVERY = 3
REUTERS_TOPICAL, REUTERS_POLITICAL = 700, 600  # stories with economic topics; untagged stories that read as politics
POLITICAL = re.compile(r"\b(minister|government|president|parliament|election|troops|army|war|rebels?|guerrillas?|"
                       r"military|diplomat\w*|talks|killed|opposition|party|embassy|ceasefire|soldiers|police|vote|"
                       r"summit|foreign)\b", re.IGNORECASE)
ECONOMIC = re.compile(r"\b(shares?|dividend|profit|net|quarter|revenue|earnings|pct|stock|mln|billion|dlrs|tonnes|"
                      r"prices?|sales|company|corp|inc)\b", re.IGNORECASE)
GROUPS = {  # group -> posts taken, spread evenly over the group
    "rec.sport.baseball": 300, "rec.sport.hockey": 300,
    "sci.space": 150, "sci.med": 100, "sci.electronics": 100, "sci.crypt": 60,
    "comp.graphics": 80, "comp.sys.ibm.pc.hardware": 80, "comp.sys.mac.hardware": 80,
    "comp.os.ms-windows.misc": 60, "comp.windows.x": 50,
    "talk.politics.mideast": 60,  # 200 made World one narrow topic (README, "A broader World in the news mix")
}
MIN_WORDS, MAX_WORDS = 40, 400
SIGN_OFF = re.compile(r"\s*reuter\s*$", re.IGNORECASE)
QUOTE = re.compile(r"^\s*(>|\||:|In article|.{0,80}\bwrites:\s*$|.{0,80}\bwrote:\s*$)")
EMAIL = re.compile(r"\S+@\S+")
SIGNATURE = re.compile(r"^\s*-{2,}\s*$")


def spread(rows: list, count: int) -> list:
    step = len(rows) / count
    return [rows[int(i * step)] for i in range(min(count, len(rows)))]


def clean_post(raw: str) -> tuple[str, str]:
    """(subject, body) of a raw post: headers, quoted lines, the signature and e-mail addresses removed."""
    head, _, body = raw.partition("\n\n")
    subject = next((line[8:].strip() for line in head.splitlines() if line.startswith("Subject:")), "")
    subject = re.sub(r"^(re:\s*)+", "", subject, flags=re.IGNORECASE)
    lines = body.splitlines()
    for cut in range(len(lines) - 1, max(-1, len(lines) - 15), -1):  # a signature sits in the last lines
        if SIGNATURE.match(lines[cut]):
            lines = lines[:cut]
            break
    kept = [EMAIL.sub("", line) for line in lines if not QUOTE.match(line)]
    text = re.sub(r"[ \t]+", " ", "\n".join(kept))
    return EMAIL.sub("", subject), re.sub(r"\n{3,}", "\n\n", text).strip()


def reuters_rows() -> list[dict]:
    rows = []
    with (DATA / "reuters21578" / "reuters21578.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            text = SIGN_OFF.sub("", row.get("text") or "").strip()
            if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                rows.append({"id": f"reuters-{row['newid']}", "source": "reuters21578", "group": ",".join(row["topics"]),
                             "title": row.get("title") or "", "text": text})
    # Reuters' topic codes are economic (earn, acq, crude, ...); untagged stories mix general, political
    # and more business news: World needs the political ones, ranked by the keyword score (ties: file order)
    topical = [row for row in rows if row["group"]]
    general = [row for row in rows if not row["group"]]
    political = sorted(general, key=lambda row: -political_score(row["text"]))[:REUTERS_POLITICAL]
    print(f"untagged Reuters stories: {len(general)}; the {len(political)} kept score "
          f"{political_score(political[-1]['text'])} to {political_score(political[0]['text'])}")
    political.sort(key=lambda row: general.index(row))  # back in file order
    return spread(topical, REUTERS_TOPICAL) + political


def political_score(text: str) -> int:
    """Political words less economic words: > 0 reads as politics, < 0 as business."""
    return len(POLITICAL.findall(text)) - len(ECONOMIC.findall(text))


def newsgroup_rows() -> list[dict]:
    by_group: dict[str, list[dict]] = {group: [] for group in GROUPS}
    with gzip.open(DATA / "20newsgroups" / "train.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["label"] not in by_group:
                continue
            subject, text = clean_post(row["text"])
            if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                by_group[row["label"]].append({"id": f"20ng-{row['id']}", "source": "20newsgroups-train",
                                               "group": row["label"], "title": subject, "text": text})
    return [row for group, count in GROUPS.items() for row in spread(by_group[group], count)]


def main() -> None:
    rows = reuters_rows() + newsgroup_rows()
    write(rows, OUT)
    write(rows[::SMALL_EVERY], SMALL_OUT)


def write(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for row in rows:
        key = row["group"] if row["source"].startswith("20") else "reuters21578"
        counts[key] = counts.get(key, 0) + 1
    print(f"wrote {len(rows)} documents to {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
