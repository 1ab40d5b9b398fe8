"""Offline text corpora from the ``gensim==4.4.0`` wheel (a PyPI download, no hub needed).

* ``wiki``: 106 English Wikipedia articles (the shortened enwiki dump in gensim's test data),
  cleaned of wiki markup into WikiText-style text (`` = Title = `` and `` = = Section = = ``
  headings, one paragraph per line), split deterministically by a hash of each title into a
  ``test`` split of about 250k words (WikiText-2 test size) and a ``calib`` split (the rest).
  The same SHA-1 ranking, continued after ``test``, carves a held-out ``validation`` split of about
  50k words out of ``calib``; ``train`` is ``calib`` without those articles. ``test`` and ``calib``
  are what they always were (their digests are part of stored protocols); calibrating on ``train``
  keeps ``validation`` unseen, so hyper-parameters can be chosen on it without reading ``test``.
* ``lee``: the Lee background news corpus (one article per line) from the same wheel.

The files carry a manifest (``MANIFEST.json``: the *recipe* — a digest of this module's source, the
gensim wheel and the mwparserfromhell version — and a SHA-256 per file). Files made by another
recipe are rebuilt instead of reused: a cache written by older cleaning code once fed half of a grid
a different wiki text (docs/FINDINGS.md). Every published run records the files' digests.
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import json
import logging
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

import mwparserfromhell

from pruning.errors import CorpusUnavailableError
from pruning.paths import corpora_dir

log = logging.getLogger(__name__)

GENSIM_SPEC = "gensim==4.4.0"
_WHEEL_DIR = "gensim/test/test_data/"
WIKI_MEMBER = _WHEEL_DIR + "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LEE_MEMBER = _WHEEL_DIR + "lee_background.cor"
TEST_WORDS = 250_000
VALIDATION_WORDS = 50_000
_DROP_TAGS = {"ref", "table", "gallery", "math", "timeline", "score", "syntaxhighlight", "imagemap", "references"}
_DROP_LINK_PREFIXES = ("file:", "image:", "category:", "media:")


@dataclass(frozen=True)
class Article:
    """One cleaned article."""

    title: str
    text: str

    @property
    def words(self) -> int:
        return len(self.text.split())


def clean_wikitext(title: str, markup: str) -> str:
    """Wiki markup -> WikiText-style plain text (templates, refs, tables, files, categories
    dropped; headings as `` = = H = = ``; paragraphs separated by blank lines)."""
    code = mwparserfromhell.parse(markup)
    for node in code.filter_templates(recursive=False):
        _remove(code, node)
    for node in code.filter_tags(recursive=True):
        if str(node.tag).strip().lower() in _DROP_TAGS:
            _remove(code, node)
    for node in code.filter_wikilinks(recursive=True):
        if str(node.title).strip().lower().startswith(_DROP_LINK_PREFIXES):
            _remove(code, node)
    for node in code.filter_headings(recursive=False):
        level = max(2, node.level)  # WikiText: " = = Section = = " for h2
        heading = node.title.strip_code().strip()
        marker = " ".join(["="] * level)
        try:
            code.replace(node, f"\n\n {marker} {heading} {marker} \n\n")
        except ValueError:
            pass  # node vanished together with a removed parent
    text = code.strip_code(normalize=True, collapse=True)
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        block = re.sub(r"[ \t]+", " ", block.replace("\n", " ")).strip()
        block = re.sub(r"\(\s*[,;]?\s*\)", "", block).strip()
        if block.startswith("=") or len(block.split()) >= 5:
            paragraphs.append(f" {block} " if block.startswith("=") else block)
    body = "\n\n".join(paragraphs)
    return f" = {title} = \n\n{body}\n" if body else ""


def _remove(code: mwparserfromhell.wikicode.Wikicode, node: object) -> None:
    try:
        code.remove(node)
    except ValueError:
        pass  # already gone with an enclosing removed node


def parse_dump(raw_xml: bytes) -> list[Article]:
    """Main-namespace, non-redirect pages of a MediaWiki XML export, cleaned, in dump order."""
    root = ET.fromstring(raw_xml)
    ns = {"mw": root.tag.split("}")[0].strip("{")}
    articles = []
    for page in root.findall("mw:page", ns):
        if page.findtext("mw:ns", default="", namespaces=ns) != "0" or page.find("mw:redirect", ns) is not None:
            continue
        title = page.findtext("mw:title", default="", namespaces=ns)
        markup = page.findtext("mw:revision/mw:text", default="", namespaces=ns)
        if markup.lstrip().upper().startswith("#REDIRECT"):
            continue
        text = clean_wikitext(title, markup)
        if text:
            articles.append(Article(title, text))
    return articles


def _fill(articles: list[Article], ranked: list[int], words: int) -> tuple[set[int], list[int]]:
    """Take articles from the front of ``ranked`` until they hold at least ``words`` words (the
    article that crosses the line is included); returns (taken ids, the rest of the ranking)."""
    taken, total = set(), 0
    for k, i in enumerate(ranked):
        if total >= words:
            return taken, ranked[k:]
        taken.add(i)
        total += articles[i].words
    return taken, []


def _title_ranking(articles: list[Article]) -> list[int]:
    """Article indices ranked by the SHA-1 of their title (the rule of every split here)."""
    return sorted(range(len(articles)), key=lambda i: hashlib.sha1(articles[i].title.encode()).hexdigest())


def split_articles(articles: list[Article], test_words: int = TEST_WORDS) -> tuple[list[Article], list[Article]]:
    """Deterministic split: articles ranked by SHA-1 of the title fill the test split up to
    ``test_words``; the rest is calibration. Both keep dump order."""
    test_ids, _ = _fill(articles, _title_ranking(articles), test_words)
    test = [a for i, a in enumerate(articles) if i in test_ids]
    calib = [a for i, a in enumerate(articles) if i not in test_ids]
    return test, calib


def validation_split(
    articles: list[Article], test_words: int = TEST_WORDS, validation_words: int = VALIDATION_WORDS
) -> tuple[list[Article], list[Article]]:
    """(validation, train) out of the calibration articles: the SHA-1 title ranking, continued after
    the test split's articles, fills ``validation`` up to ``validation_words``; ``train`` is the rest
    of ``calib``. Both keep dump order; test, validation and train are disjoint by title and together
    are every article."""
    _, after_test = _fill(articles, _title_ranking(articles), test_words)
    validation_ids, _ = _fill(articles, after_test, validation_words)
    calib = set(after_test)
    validation = [a for i, a in enumerate(articles) if i in validation_ids]
    train = [a for i, a in enumerate(articles) if i in calib and i not in validation_ids]
    return validation, train


def download_gensim_wheel(dest: Path) -> Path:
    """``pip download --no-deps gensim==4.4.0`` into ``dest``; returns the wheel path."""
    dest.mkdir(parents=True, exist_ok=True)
    existing = sorted(dest.glob("gensim-4.4.0-*.whl"))
    if existing:
        return existing[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", GENSIM_SPEC, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("gensim-4.4.0-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise CorpusUnavailableError(
            f"could not download {GENSIM_SPEC} from the package index (pip exit {proc.returncode}): "
            f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no wheel'}; "
            "use `text:PATH` for a local text file instead"
        )
    return wheels[0]


MANIFEST = "MANIFEST.json"
CORPUS_FILES = ("wiki.test", "wiki.calib", "lee", "wiki.validation", "wiki.train")


@functools.lru_cache(maxsize=1)  # load_text checks it on every call; the source cannot change in-process
def corpus_recipe() -> str:
    """Digest (16 hex) of what determines the corpus text: this module's source, the gensim wheel
    spec and the mwparserfromhell version."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"{GENSIM_SPEC}|mwparserfromhell {mwparserfromhell.__version__}".encode())
    return h.hexdigest()[:16]


def read_manifest(directory: Path | None = None) -> dict | None:
    """The corpora manifest (``{"recipe", "files": {name: {"sha256", "bytes"}}}``), or None."""
    path = (directory or corpora_dir()) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def corpus_fingerprints(directory: Path | None = None) -> dict[str, str]:
    """``{name: sha256[:16]}`` of the prepared corpus files (empty when none are prepared)."""
    manifest = read_manifest(directory) or {}
    return {name: meta["sha256"][:16] for name, meta in manifest.get("files", {}).items()}


def _current(targets: dict[str, Path]) -> bool:
    """True when every file exists and the manifest says this recipe made exactly these files."""
    if not all(p.is_file() and p.stat().st_size > 0 for p in targets.values()):
        return False
    manifest = read_manifest(next(iter(targets.values())).parent)
    if manifest is None:
        log.warning("offline corpora without a manifest (made by an older version): rebuilding them")
        return False
    if manifest.get("recipe") != corpus_recipe():
        log.warning("offline corpora made by recipe %s, this code is recipe %s: rebuilding them",
                    manifest.get("recipe"), corpus_recipe())
        return False
    sizes = {name: meta.get("bytes") for name, meta in manifest.get("files", {}).items()}
    if sizes != {name: p.stat().st_size for name, p in targets.items()}:
        log.warning("offline corpora differ from their manifest (edited by hand?): rebuilding them")
        return False
    return True


def prepare_offline_corpora(force: bool = False) -> dict[str, Path]:
    """Create ``wiki.test.txt``, ``wiki.calib.txt``, ``wiki.validation.txt``, ``wiki.train.txt`` and
    ``lee.txt`` in the corpora cache, with their manifest. Existing files are kept when this code's
    recipe made them (unless ``force``) and rebuilt otherwise. Returns name -> path."""
    out = corpora_dir()
    targets = {name: out / f"{name}.txt" for name in CORPUS_FILES}
    if not force and _current(targets):
        return targets
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_gensim_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            raw_xml = bz2.decompress(zf.read(WIKI_MEMBER))
            lee = zf.read(LEE_MEMBER).decode("utf-8", errors="replace")
    articles = parse_dump(raw_xml)
    test, calib = split_articles(articles)
    validation, train = validation_split(articles)
    log.info(
        "wiki: %d articles -> test %d articles / %d words, calib %d / %d (validation %d / %d, train %d / %d)",
        len(articles), len(test), sum(a.words for a in test), len(calib), sum(a.words for a in calib),
        len(validation), sum(a.words for a in validation), len(train), sum(a.words for a in train),
    )
    for name, part in (("wiki.test", test), ("wiki.calib", calib), ("wiki.validation", validation),
                       ("wiki.train", train)):
        _atomic_write(targets[name], "\n".join(a.text for a in part))
    lee_text = "\n\n".join(line.strip() for line in lee.splitlines() if line.strip())
    _atomic_write(targets["lee"], lee_text + "\n")
    files = {name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
             for name, p in targets.items()}
    _atomic_write(out / MANIFEST, json.dumps({"recipe": corpus_recipe(), "files": files}, indent=1, sort_keys=True))
    return targets


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
