"""Write gate: an informativeness score in [0, 1]; text below ``write_threshold`` is not stored."""
from __future__ import annotations

import re

from apt_ext.memory.anchors import STOPWORDS

_FILLERS = frozenset("""ok okay k yes no yeah yep nope sure thanks thank thx ty hmm hm um uh ah oh
lol haha hi hello hey bye cool nice great fine good alright right""".split())
_ZH_FILLERS = ("好的", "好", "嗯", "哦", "谢谢", "是的", "对", "行", "收到", "哈哈", "你好", "再见", "明白")
_EN_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-.%]*")
_CJK = re.compile(r"[\u4e00-\u9fff]")

UNIT = 0.34  # score of one content word, two CJK characters or one anchor


def informativeness(text: str, n_anchors: int) -> float:
    """Score in [0, 1]: 0.34 per English content word (not a stopword or filler), per two CJK
    characters left after removing filler phrases, and per anchor."""
    words = [w.lower() for w in _EN_WORD.findall(text)]
    content = sum(1 for w in words if w not in STOPWORDS and w not in _FILLERS)
    zh = text
    for filler in _ZH_FILLERS:
        zh = zh.replace(filler, "")
    cjk = len(_CJK.findall(zh))
    return min(1.0, UNIT * (content + cjk / 2.0 + n_anchors))
