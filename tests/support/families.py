"""A realistic LoRA library in known families, for tests and benchmarks of recommendations.

Every adapter belongs to one `Family` (a style, a character, a concept, a piece of clothing or
a pose, on one base model), so "similar adapters" can be judged: `precision_at_k` is the share
of a recommender's top-k results that are in the query's family.

The text is made to keep that judgement honest: names, descriptions (sometimes with Civitai's
HTML), tags, trained words with spelling variants and typos, activation text and authors vary
from row to row; families share generic words ("style", "detailed", "lora", "high quality"),
some are deliberately close (ink wash and watercolor share "brush", "brushstrokes" and
"painting"; cyberpunk neon and vaporwave share "neon"; ukiyo-e and samurai armor "japanese"),
and about 5 % of the adapters carry nothing but a file-like name, as real libraries do.

    rows = build_rows(per_family=50)              # [(adapter row, LibraryEntry), ...]
    entries = insert_library(engine, per_family=50)  # into a migrated database
    precision_at_k({query_id: [result ids, best first], ...}, entries, k=5)

Everything is deterministic for a seed. Rows are complete: every adapter column is set
(NOT NULL ones to valid values, without relying on server defaults), `search_text` is what
the catalog's `build_search_text` makes, and `insert_library` also writes the `adaptertag`
rows and (SQLite) `adapter_fts` rows that the importer would, and stores a missing JSON
value as SQL NULL as the importer does. One difference from imported rows: the importer turns
Civitai's HTML descriptions into text (`html_to_text`), while a quarter of these keep the
HTML, so whatever reads descriptions must cope with both.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import random
import re
import string
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Engine, insert, null, text

from lora_manager.catalog.repository import build_search_text, wanted_tags
from lora_manager.core.models import Adapter, AdapterTag

KINDS = ("style", "character", "concept", "clothing", "pose")
BASE_MODELS = ("SD 1.5", "SDXL 1.0", "Flux.1 D")
# What the importer derives from the base model (ingest.sidecars.merge._sd_version_of).
SD_VERSIONS = {"SD 1.5": "SD1", "SDXL 1.0": "SDXL", "Flux.1 D": None}
# Words many families use, in their vocabulary or as filler: a recommender can't lean on them.
GENERIC_WORDS = (
    "style",
    "detailed",
    "lora",
    "high quality",
    "masterpiece",
    "best quality",
    "illustration",
    "cinematic",
    "fantasy",
    "cute",
    "moody",
    "elegant",
    "character",
    "clothing",
    "pose",
)
LIBRARY_ROOT = "/loras"
_ID_NAMESPACE = uuid.UUID("6f3b0c3e-5d3a-4f0e-9a57-1c2e9b7d4a10")
_EPOCH = datetime(2023, 1, 1)
MIB = 1024 * 1024
SQLITE_LOAD_CACHE_KIB = 256 * 1024  # SQLite page cache while loading (the default is 2 MiB)


@dataclass(frozen=True)
class Family:
    """A group of adapters that are "similar": same kind of subject, same base model."""

    key: str
    kind: str  # one of KINDS
    base_model: str  # one of BASE_MODELS
    words: tuple[str, ...]  # distinctive vocabulary (a few generic words among them)
    triggers: tuple[str, ...]  # canonical trigger phrases
    names: tuple[str, ...] = ()  # name stems authors use; the key title-cased when empty

    def name_stems(self) -> tuple[str, ...]:
        return self.names or (self.key.replace("_", " ").title(),)


FAMILIES: tuple[Family, ...] = (
    # --- styles ------------------------------------------------------------------------
    Family(
        "ink_wash",
        "style",
        "SDXL 1.0",
        (
            "ink",
            "wash",
            "sumi-e",
            "monochrome",
            "brush",
            "brushstrokes",
            "painting",
            "calligraphy",
            "rice paper",
            "paper",
            "traditional media",
            "bamboo",
            "zen",
            "style",
        ),
        ("ink wash style", "sumi-e painting"),
        (
            "Ink Wash",
            "Sumi-e Brush",
            "InkWash",
            "Monochrome Ink",
            "Brush Painting",
            "Traditional Painting",
        ),
    ),
    Family(
        "watercolor",
        "style",
        "SDXL 1.0",
        (
            "watercolor",
            "aquarelle",
            "wet",
            "wash",
            "pigment",
            "bleed",
            "paper",
            "brush",
            "brushstrokes",
            "painting",
            "traditional media",
            "pastel",
            "style",
        ),
        ("watercolor style", "wet on wet"),
        (
            "Watercolor",
            "Soft Watercolor",
            "Aquarelle",
            "Watercolor Wash",
            "Brush Painting",
            "Traditional Painting",
        ),
    ),
    Family(
        "pixel_art",
        "style",
        "SD 1.5",
        (
            "pixel",
            "pixel art",
            "8-bit",
            "16-bit",
            "sprite",
            "retro",
            "game",
            "dithering",
            "palette",
            "isometric",
            "style",
        ),
        ("pixel art", "pixelsprite"),
        ("Pixel Art", "8-Bit Sprites", "PixelArt", "Retro Pixel", "16-Bit Game Art"),
    ),
    Family(
        "cyberpunk_neon",
        "style",
        "Flux.1 D",
        (
            "cyberpunk",
            "neon",
            "city",
            "night",
            "rain",
            "hologram",
            "chrome",
            "futuristic",
            "retro",
            "glowing",
            "implants",
            "detailed",
        ),
        ("cyberpunk neon", "neon city"),
        ("Cyberpunk Neon", "Neon City Nights", "NeonPunk", "Chrome & Neon", "Retro Neon"),
    ),
    Family(
        "film_noir",
        "style",
        "SD 1.5",
        (
            "noir",
            "film",
            "black and white",
            "shadows",
            "detective",
            "cigarette smoke",
            "venetian blinds",
            "1940s",
            "high contrast",
            "moody",
            "cinematic",
        ),
        ("film noir", "noir lighting"),
        ("Film Noir", "Noir Shadows", "NoirStyle", "Detective Noir", "1940s Noir"),
    ),
    Family(
        "ukiyo_e",
        "style",
        "SDXL 1.0",
        (
            "ukiyo-e",
            "woodblock",
            "print",
            "edo period",
            "japanese",
            "samurai",
            "great wave",
            "flat colors",
            "bold outlines",
            "painting",
            "style",
        ),
        ("ukiyo-e style", "woodblock print"),
        ("Ukiyo-e", "Woodblock Print", "UkiyoE", "Edo Prints", "Samurai Prints"),
    ),
    Family(
        "low_poly",
        "style",
        "SD 1.5",
        (
            "low poly",
            "polygon",
            "3d",
            "render",
            "faceted",
            "geometric",
            "flat shading",
            "blender",
            "minimal",
            "isometric",
        ),
        ("low poly", "lowpoly render"),
        ("Low Poly 3D", "LowPoly", "Polygon World", "Faceted 3D", "Geometric Low Poly"),
    ),
    Family(
        "claymation",
        "style",
        "Flux.1 D",
        (
            "claymation",
            "clay",
            "plasticine",
            "stop motion",
            "handmade",
            "fingerprints",
            "miniature",
            "3d",
            "render",
            "cute",
        ),
        ("claymation style", "plasticine figure"),
        ("Claymation", "Clay World", "Plasticine", "Stop Motion Clay", "ClayFlux"),
    ),
    Family(
        "art_nouveau",
        "style",
        "SDXL 1.0",
        (
            "art nouveau",
            "ornamental",
            "floral",
            "flowing lines",
            "poster",
            "gold leaf",
            "decorative",
            "stained glass",
            "elegant",
            "illustration",
            "style",
        ),
        ("art nouveau", "nouveau poster"),
        ("Art Nouveau", "Nouveau Posters", "ArtNouveau", "Gilded Nouveau", "Floral Nouveau"),
    ),
    Family(
        "vaporwave",
        "style",
        "SD 1.5",
        (
            "vaporwave",
            "synthwave",
            "retro",
            "neon",
            "glowing",
            "night",
            "pink",
            "purple",
            "grid",
            "sunset",
            "marble bust",
            "80s",
            "aesthetic",
        ),
        ("vaporwave aesthetic", "synthwave"),
        ("Vaporwave", "Synthwave Dreams", "VaporWave", "Retro Sunset", "Retro Neon"),
    ),
    # --- characters (invented) -------------------------------------------------------------
    Family(
        "kaelith_moonward",
        "character",
        "SDXL 1.0",
        (
            "kaelith",
            "moonward",
            "elf",
            "ranger",
            "silver hair",
            "pointed ears",
            "longbow",
            "green cloak",
            "forest",
            "character",
        ),
        ("kaelith moonward", "kaelith"),
        ("Kaelith Moonward", "Kaelith the Elf Ranger", "Kaelith", "Moonward Ranger"),
    ),
    Family(
        "orsolya_vane",
        "character",
        "SD 1.5",
        (
            "orsolya",
            "vane",
            "captain",
            "sky pirate",
            "airship",
            "tricorn hat",
            "eyepatch",
            "red coat",
            "goggles",
            "character",
        ),
        ("orsolya vane", "captain orsolya"),
        ("Captain Orsolya Vane", "Orsolya Vane", "Sky Pirate Orsolya", "OrsolyaVane"),
    ),
    Family(
        "miro_tansu",
        "character",
        "Flux.1 D",
        (
            "miro",
            "tansu",
            "mecha",
            "pilot",
            "plugsuit",
            "short blue hair",
            "cockpit",
            "helmet",
            "futuristic",
            "character",
        ),
        ("miro tansu", "pilot miro"),
        ("Miro Tansu", "Pilot Miro", "Miro Tansu (Mecha Pilot)", "MiroTansu"),
    ),
    Family(
        "zephra_stormcaller",
        "character",
        "SDXL 1.0",
        (
            "zephra",
            "stormcaller",
            "witch",
            "lightning",
            "storm",
            "wide brim hat",
            "purple robes",
            "staff",
            "glowing eyes",
            "character",
        ),
        ("zephra stormcaller", "zephra"),
        ("Zephra Stormcaller", "Zephra the Storm Witch", "Zephra", "Stormcaller Zephra"),
    ),
    Family(
        "bramble_gearwhistle",
        "character",
        "SD 1.5",
        (
            "bramble",
            "gearwhistle",
            "goblin",
            "tinkerer",
            "goggles",
            "green skin",
            "wrench",
            "workshop",
            "cute",
            "character",
        ),
        ("bramble gearwhistle", "goblin bramble"),
        ("Bramble Gearwhistle", "Bramble the Goblin", "Gearwhistle", "Bramble Tinkerer"),
    ),
    # --- concepts ----------------------------------------------------------------------
    Family(
        "detailed_hands",
        "concept",
        "SD 1.5",
        (
            "hands",
            "fingers",
            "five fingers",
            "anatomy",
            "fix",
            "correct hands",
            "hand pose",
            "detailed",
            "high quality",
        ),
        ("detailed hands", "perfect hands"),
        ("Detailed Hands", "Better Hands", "Hand Fix", "Perfect Hands", "Hands Helper"),
    ),
    Family(
        "rain_on_glass",
        "concept",
        "Flux.1 D",
        (
            "rain",
            "glass",
            "window",
            "droplets",
            "raindrops",
            "condensation",
            "bokeh",
            "reflection",
            "wet",
            "moody",
        ),
        ("rain on glass", "raindrops on window"),
        ("Rain on Glass", "Raindrop Window", "Rainy Window", "Wet Glass Droplets"),
    ),
    Family(
        "bioluminescent_forest",
        "concept",
        "SDXL 1.0",
        (
            "bioluminescent",
            "forest",
            "glowing",
            "mushrooms",
            "fireflies",
            "night",
            "fantasy",
            "cyan glow",
            "plants",
            "landscape",
        ),
        ("bioluminescent forest", "glowing mushrooms"),
        ("Bioluminescent Forest", "Glowing Forest", "Biolume", "Luminous Woods"),
    ),
    Family(
        "floating_islands",
        "concept",
        "Flux.1 D",
        (
            "floating islands",
            "sky",
            "clouds",
            "waterfalls",
            "fantasy",
            "landscape",
            "levitating",
            "rocks",
            "ethereal",
        ),
        ("floating islands", "sky islands"),
        ("Floating Islands", "Sky Islands", "Levitating Lands", "Cloud Isles"),
    ),
    Family(
        "clockwork_machinery",
        "concept",
        "SD 1.5",
        (
            "clockwork",
            "gears",
            "steampunk",
            "brass",
            "cogs",
            "machinery",
            "pipes",
            "steam",
            "mechanical",
            "detailed",
        ),
        ("clockwork machinery", "brass gears"),
        ("Clockwork Machinery", "Brass Gears", "Steampunk Clockwork", "Cogworks"),
    ),
    # --- clothing ----------------------------------------------------------------------
    Family(
        "samurai_armor",
        "clothing",
        "SDXL 1.0",
        (
            "samurai",
            "armor",
            "kabuto",
            "lamellar",
            "japanese",
            "edo period",
            "katana",
            "menpo",
            "lacquered plates",
            "warrior",
            "clothing",
        ),
        ("samurai armor", "o-yoroi"),
        ("Samurai Armor", "O-Yoroi Armor", "SamuraiArmor", "Edo Samurai"),
    ),
    Family(
        "victorian_dress",
        "clothing",
        "SD 1.5",
        (
            "victorian",
            "dress",
            "corset",
            "bustle",
            "lace",
            "ruffles",
            "gown",
            "19th century",
            "elegant",
            "clothing",
        ),
        ("victorian dress", "bustle gown"),
        ("Victorian Dress", "Victorian Gown", "Lace & Corset", "VictorianDress", "Bustle Dress"),
    ),
    Family(
        "knitted_sweater",
        "clothing",
        "Flux.1 D",
        (
            "knitted",
            "sweater",
            "wool",
            "cable knit",
            "cozy",
            "turtleneck",
            "oversized",
            "yarn",
            "clothing",
        ),
        ("knitted sweater", "cable knit sweater"),
        ("Knitted Sweater", "Cozy Sweater", "Cable Knit", "Wool Sweater"),
    ),
    # --- poses -------------------------------------------------------------------------
    Family(
        "dynamic_action_pose",
        "pose",
        "SDXL 1.0",
        (
            "dynamic pose",
            "action",
            "jumping",
            "motion blur",
            "foreshortening",
            "fighting stance",
            "mid-air",
            "dynamic angle",
            "pose",
        ),
        ("dynamic action pose", "action pose"),
        ("Dynamic Action Pose", "Action Poses", "Dynamic Pose", "Mid-Air Action"),
    ),
    Family(
        "sitting_cross_legged",
        "pose",
        "SD 1.5",
        (
            "sitting",
            "cross-legged",
            "floor",
            "meditation",
            "relaxed",
            "lotus",
            "full body",
            "pose",
        ),
        ("sitting cross-legged", "cross legged pose"),
        ("Sitting Cross-Legged", "Cross Legged Pose", "Floor Sitting", "Lotus Sitting Pose"),
    ),
    Family(
        "looking_over_shoulder",
        "pose",
        "Flux.1 D",
        (
            "looking back",
            "over shoulder",
            "from behind",
            "glance",
            "turning head",
            "back view",
            "portrait",
            "pose",
        ),
        ("looking over shoulder", "looking back"),
        ("Looking Over Shoulder", "Looking Back Pose", "Over the Shoulder", "Backward Glance"),
    ),
)
FAMILY_BY_KEY: dict[str, Family] = {family.key: family for family in FAMILIES}
# Deliberately close pairs: they share vocabulary and name stems ("Brush Painting",
# "Retro Neon"), so a recommender can confuse them.
CLOSE_PAIRS: tuple[tuple[str, str], ...] = (
    ("ink_wash", "watercolor"),
    ("cyberpunk_neon", "vaporwave"),
    ("ukiyo_e", "samurai_armor"),
)


@dataclass
class LibraryEntry:
    """What a test needs to judge a recommendation: an adapter id and its family."""

    id: str
    family: str
    base_model: str
    name: str
    triggers: list[str]


# --- text --------------------------------------------------------------------------------

_KIND_TAGS = {
    "style": "style",
    "character": "character",
    "concept": "concept",
    "clothing": "clothing",
    "pose": "poses",
}
_GENERIC_TAGS = (
    "lora",
    "anime",
    "high quality",
    "detailed",
    "fantasy",
    "realistic",
    "illustration",
    "base model",
    "art",
    "sfw",
)
_FAMILY_SENTENCES = (
    "{Name} is a {kind} LoRA for {a} and {b}.",
    "Trained on {count} images of {a}, {b} and {c}.",
    "Adds {a} and {b} to your generations.",
    "Use the trigger word {t} at weight 0.{w}.",
    "Best with {a}; try adding {b} to the prompt.",
    "A {g} take on {a} with plenty of {b}.",
    "Captures {a} really well, especially {b}.",
    "This one focuses on {a}.",
    "{Name} for {base}, good at {a}.",
)
_FILLER_SENTENCES = (
    "Feedback is welcome!",
    "Please leave a review if you like it.",
    "Check the sample images for prompts.",
    "Thanks to everyone who tested the early versions.",
    "No negative prompt needed.",
    "Works with most checkpoints.",
    "Recommended sampler: DPM++ 2M Karras, 25 steps.",
    "Use a {g} checkpoint for {g2} results.",
    "Lower the weight if the images get overcooked.",
    "Made for fun, use it however you like.",
    "Hires fix helps a lot.",
    "Trained with kohya_ss, {count} steps.",
)
_VERSIONS = (
    "v1.0",
    "v1",
    "v2",
    "v2.0",
    "v2.1",
    "v3",
    "v3.5",
    "v4",
    "epoch 8",
    "epoch 10",
    "final",
    "beta",
    "1.0",
    "2.0",
)
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "SD 1.5": ("", "", " LoRA", " SD1.5", " (SD 1.5)"),
    "SDXL 1.0": ("", " LoRA", " XL", "XL", " SDXL"),
    "Flux.1 D": ("", " LoRA", " Flux", " [FLUX]", " F1"),
}
_SYLLABLES = tuple(
    "ka ri to na mi ro se lu va ne shi po da ki mo te ra zu fe lo an el or is um".split()  # noqa: SIM905
)
_HANDLE_ENDS = ("", "", "_art", "_ai", "lab", "_loras", "studio", "x")


# random.Random's choice, randint and randrange cost ~1 us each in Python; a row draws
# dozens. These use one C-level random() call each (same determinism, negligible bias).
def _below(rng: random.Random, n: int) -> int:
    return int(rng.random() * n)


def _randint(rng: random.Random, a: int, b: int) -> int:
    return a + int(rng.random() * (b - a + 1))


def _choice(rng: random.Random, seq: Sequence[Any]) -> Any:
    return seq[int(rng.random() * len(seq))]


def slugify(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-") or "lora"


def authors(seed: int, count: int = 400) -> list[str]:
    """Invented usernames, the same for a seed."""
    rng = random.Random(f"{seed}:authors")
    handles: list[str] = []
    seen: set[str] = set()
    while len(handles) < count:
        word = "".join(_choice(rng, _SYLLABLES) for _ in range(_randint(rng, 2, 3)))
        handle = word + _choice(rng, _HANDLE_ENDS)
        if rng.random() < 0.4:
            handle += str(_randint(rng, 1, 999))
        if rng.random() < 0.2:
            handle = handle.capitalize()
        if handle not in seen:
            seen.add(handle)
            handles.append(handle)
    return handles


def typo(word: str, rng: random.Random) -> str:
    """One keyboard slip: two neighbouring letters swapped, a letter dropped or doubled."""
    positions = [i for i, c in enumerate(word) if c.isalpha()]
    if len(positions) < 4:
        return word + word[-1]
    i = _choice(rng, positions[1:-1])
    match _below(rng, 3):
        case 0 if word[i + 1].isalpha() and word[i] != word[i + 1]:
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        case 1:
            return word[:i] + word[i + 1 :]
        case _:
            return word[:i] + word[i] + word[i:]


def spelling_variant(trigger: str, rng: random.Random, typo_rate: float = 0.04) -> str:
    """A trigger as authors write it: as is, with underscores or hyphens, run together in
    CamelCase, capitalised, shouted; a small share with a typo."""
    words = trigger.split()
    roll = rng.random()
    if roll < 0.40:
        out = trigger
    elif roll < 0.55:
        out = "_".join(words)
    elif roll < 0.65:
        out = "-".join(words)
    elif roll < 0.77:
        out = "".join(w[:1].upper() + w[1:] for w in words)
    elif roll < 0.92:
        out = trigger.title()
    else:
        out = trigger.upper()
    if rng.random() < typo_rate:
        out = typo(out, rng)
    return out


def _pick(rng: random.Random, words: Sequence[str], k: int) -> list[str]:
    """k distinct words (fewer if there aren't k)."""
    k = min(k, len(set(words)))
    out: list[str] = []
    while len(out) < k:
        word = words[int(rng.random() * len(words))]
        if word not in out:
            out.append(word)
    return out


def _fields(template: str) -> frozenset[str]:
    return frozenset(field for _, field, _, _ in string.Formatter().parse(template) if field)


_TEMPLATE_FIELDS = {t: _fields(t) for t in (*_FAMILY_SENTENCES, *_FILLER_SENTENCES)}
_COUNTS = (20, 35, 40, 60, 80, 120, 200, 1500, 3000, 4200)


def _sentence(template: str, rng: random.Random, family: Family, name: str, trigger: str) -> str:
    """The template with its fields filled; only the fields it has are drawn."""
    fields = _TEMPLATE_FIELDS[template]
    values: dict[str, Any] = {
        "Name": name,
        "kind": family.kind,
        "base": family.base_model,
        "t": trigger,
    }
    wanted = [f for f in ("a", "b", "c") if f in fields]
    values.update(zip(wanted, _pick(rng, family.words, len(wanted)), strict=False))
    if "g" in fields:
        values["g"] = _choice(rng, GENERIC_WORDS)
    if "g2" in fields:
        values["g2"] = _choice(rng, GENERIC_WORDS)
    if "w" in fields:
        values["w"] = _randint(rng, 5, 9)
    if "count" in fields:
        values["count"] = _choice(rng, _COUNTS)
    return template.format_map(values)


_PARTNERS = {a: b for pair in CLOSE_PAIRS for a, b in (pair, pair[::-1])}
_MENTIONS = (
    "Pairs nicely with {other} LoRAs.",
    "Not to be confused with my {other} LoRA.",
    "Inspired by {other}.",
    "Also try it together with {other}.",
)


def _mention(rng: random.Random, family: Family) -> str:
    """A sentence naming another family (its close partner more often than not): real
    descriptions mention other LoRAs, and a recommender must not follow every word."""
    partner = _PARTNERS.get(family.key)
    if partner and rng.random() < 0.6:
        other = FAMILY_BY_KEY[partner]
    else:
        other = _choice(rng, [f for f in FAMILIES if f.key != family.key])
    word = _choice(rng, other.name_stems() + other.words[:3])
    return _choice(rng, _MENTIONS).format(other=word)


def description_of(rng: random.Random, family: Family, name: str, trigger: str) -> str:
    """1-3 sentences: one about the family, the rest family words or generic filler,
    sometimes a mention of another family; a quarter in Civitai's HTML."""
    sentences = [_sentence(_choice(rng, _FAMILY_SENTENCES), rng, family, name, trigger)]
    for _ in range(_randint(rng, 0, 2)):
        roll = rng.random()
        if roll < 0.12:
            sentences.append(_mention(rng, family))
        else:
            pool = _FILLER_SENTENCES if roll < 0.56 else _FAMILY_SENTENCES
            sentences.append(_sentence(_choice(rng, pool), rng, family, name, trigger))
    sentences = [s[:1].upper() + s[1:] for s in sentences]
    roll = rng.random()
    if roll < 0.12:
        return "".join(f"<p>{s.replace('&', '&amp;')}</p>" for s in sentences)
    if roll < 0.20:
        body = " ".join(sentences).replace(trigger, f"<b>{trigger}</b>")
        return f"<p>{body}</p>"
    if roll < 0.25 and len(sentences) > 1:
        items = "".join(f"<li>{s}</li>" for s in sentences[1:])
        return f"<p>{sentences[0]}</p><ul>{items}</ul>"
    return " ".join(sentences)


def tags_of(rng: random.Random, family: Family) -> list[str]:
    """2-6 tags: family words, often the kind, sometimes generic tags."""
    total = _randint(rng, 2, 6)
    tags = _pick(rng, family.words, _randint(rng, 1, min(4, total)))
    if rng.random() < 0.6 and _KIND_TAGS[family.kind] not in tags:
        tags.append(_KIND_TAGS[family.kind])
    while len(tags) < total:
        tag = _choice(rng, _GENERIC_TAGS)
        if tag not in tags:
            tags.append(tag)
    return tags


def name_of(rng: random.Random, family: Family) -> str:
    stem = _choice(rng, family.name_stems())
    suffix = _choice(rng, _SUFFIXES.get(family.base_model, ("", " LoRA")))
    if suffix == "XL" and " " in stem:
        suffix = " XL"
    if family.kind == "style" and rng.random() < 0.25 and "style" not in stem.lower():
        stem += " Style"
    return stem + suffix


def sparse_name_of(rng: random.Random, family: Family, n: int) -> str:
    """A name that is only a file stem: `ink_wash_v3`, `InkWash-000010`."""
    stem = _choice(rng, family.name_stems())
    match _below(rng, 3):
        case 0:
            return slugify(stem).replace("-", "_") + f"_v{_randint(rng, 1, 5)}"
        case 1:
            return re.sub(r"[^A-Za-z0-9]", "", stem) + f"-{n:06d}"
        case _:
            return slugify(stem)


# --- rows --------------------------------------------------------------------------------


def adapter_id(seed: int, family: str, n: int) -> str:
    """`str(uuid.uuid5(namespace, f"{seed}/{family}/{n}"))`, formatted by hand (3x faster)."""
    name = f"{seed}/{family}/{n}".encode()
    h = hashlib.sha1(_ID_NAMESPACE.bytes + name, usedforsecurity=False).hexdigest()
    variant = (int(h[16], 16) & 0x3) | 0x8
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant:x}{h[17:20]}-{h[20:32]}"


class _RowView:
    """A row's values as attributes, for `build_search_text` (which reads an Adapter)."""

    __slots__ = ("_row",)

    def __init__(self, row: dict[str, Any]) -> None:
        self._row = row

    def __getattr__(self, name: str) -> Any:
        try:
            return self._row[name]
        except KeyError:
            raise AttributeError(name) from None


def _row(
    rng: random.Random,
    family: Family,
    family_index: int,
    n: int,
    seed: int,
    handles: Sequence[str],
    used: set[tuple[str, str]],
) -> tuple[dict[str, Any], LibraryEntry]:
    sparse = rng.random() < 0.05
    created = _EPOCH + timedelta(seconds=_below(rng, 2 * 365 * 86400))
    updated = created + timedelta(seconds=_below(rng, 30 * 86400))
    digest = hashlib.sha256(f"{seed}/{family.key}/{n}".encode()).hexdigest()
    size = _randint(rng, 9, 230) * MIB + _below(rng, MIB)
    mtime_ns = int((created - datetime(1970, 1, 1)).total_seconds()) * 1_000_000_000
    model_id = 10_000 + _below(rng, 400_000)
    info_size = _randint(rng, 1500, 40_000)
    version_id = model_id * 3 + _below(rng, 3)

    if sparse:
        name = sparse_name_of(rng, family, n)
        version: str | None = None
        description = author = activation = None
        tags: list[str] | None = None
        trained: list[str] | None = None
        downloads = None
    else:
        name = name_of(rng, family)
        version = _choice(rng, _VERSIONS)
        for candidate in (version, f"v{n // 100 + 1}.{n % 100}", f"build {family_index}.{n}"):
            if (name, candidate) not in used:
                version = candidate
                break
        used.add((name, version))
        chosen = _pick(rng, family.triggers, _choice(rng, (1, 1, 1, 2)))
        trained = list(dict.fromkeys(spelling_variant(t, rng) for t in chosen))
        if rng.random() < 0.12:
            trained = None  # a LoRA published without trained words
        shown = (trained or [_choice(rng, family.triggers)])[0]
        description = description_of(rng, family, name, shown) if rng.random() < 0.92 else None
        tags = tags_of(rng, family) if rng.random() < 0.95 else None
        author = _choice(rng, handles) if rng.random() < 0.9 else None
        activation = None
        if trained and rng.random() < 0.4:
            activation = ", ".join(trained)
            if rng.random() < 0.3:
                activation += ", " + _choice(rng, family.words)
        downloads = int(rng.paretovariate(1.1) * 50)

    slug = slugify(name)
    path = f"{LIBRARY_ROOT}/{family.key}/{slug}-{n}.safetensors"
    info_path = path.removesuffix(".safetensors") + ".civitai.info"
    # As the importer merges them: activation text's words, then the trained words.
    split = [word.strip() for word in (activation or "").split(",") if word.strip()]
    triggers = list(dict.fromkeys([*split, *(trained or [])]))
    preferred = None if sparse else _choice(rng, (None, 0.6, 0.7, 0.8, 0.9, 1.0))
    rating = _randint(rng, 1, 5) if rng.random() < 0.08 else None
    favorite = rng.random() < 0.03
    row: dict[str, Any] = {
        "id": adapter_id(seed, family.key, n),
        "name": name,
        "version": version,
        "tags": tags,
        "file_path": path,
        "weight": preferred or 1.0,
        "active": False,
        "ordinal": None,
        "archetype": None,
        "archetype_confidence": None,
        "created_at": created,
        "updated_at": updated,
        "canonical_version_name": version,
        "description": description,
        "author_username": author,
        "visibility": "Public",
        "published_at": None if sparse else created - timedelta(days=_randint(rng, 1, 400)),
        "trained_words": trained,
        "triggers": triggers or None,
        "primary_file_name": f"{slug}-{n}.safetensors",
        "primary_file_size_kb": size // 1024,
        "primary_file_sha256": digest,
        "primary_file_download_url": None
        if sparse
        else f"https://civitai.com/api/download/models/{version_id}",
        "primary_file_local_path": path,
        "supports_generation": (not sparse) and rng.random() < 0.3,
        "sd_version": SD_VERSIONS.get(family.base_model),
        "nsfw_level": 0 if sparse or rng.random() < 0.9 else 1,
        "activation_text": activation,
        "stats": None
        if downloads is None
        else {"downloadCount": downloads, "thumbsUpCount": downloads // 12},
        "extra": None if sparse else {"civitai": {"modelId": model_id, "versionId": version_id}},
        "json_file_path": None if sparse else info_path,
        "json_file_mtime": None if sparse else updated,
        "json_file_size": None if sparse else info_size,
        "last_ingested_at": updated,
        "is_favorite": favorite,
        "favorite_updated_at": updated if favorite else None,
        "rating": rating,
        "rating_updated_at": updated if rating else None,
        "notes": None,
        "user_tags": None,
        "base_model": family.base_model,
        "preferred_weight": preferred,
        "download_count": downloads,
        "sha256": digest,
        "autov2": digest[:10].upper(),
        "tensor_sha256": None,
        "declared_sha256": None,
        "file_size": size,
        "file_mtime_ns": mtime_ns,
        "real_path": path,
        "library_root": LIBRARY_ROOT,
        "file_format": "safetensors",
        "preview_path": None,
        "sidecar_state": None if sparse else {info_path.rsplit("/", 1)[1]: [info_size, mtime_ns]},
        "ingest_status": "ok",
        "ingest_error": None,
        "missing_since": None,
        "search_text": None,
    }
    row["search_text"] = build_search_text(_RowView(row))
    entry = LibraryEntry(row["id"], family.key, family.base_model, name, list(triggers))
    return row, entry


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while building or loading: a 100,000-row library is
    millions of live objects that every full collection would walk again (a third of the
    build time), and the rows hold no cycles to collect."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def build_rows(
    per_family: int, seed: int = 7, families: Iterable[Family] = FAMILIES
) -> list[tuple[dict[str, Any], LibraryEntry]]:
    """`per_family` adapter rows of each family, with the entry that records its family.

    Deterministic for a seed (each family draws from its own `random.Random` seeded by the
    seed and the family's key). Each row sets every adapter column; ids are uuid5 of the
    seed, family and index; file paths are `/loras/<family>/<slug>-<n>.safetensors`; (name,
    version) pairs are unique, as the schema requires; `base_model` is the family's. About
    5 % of the rows are sparse: a file-like name and no version, description, tags,
    triggers, activation text, author or Civitai data.
    """
    if per_family < 0:
        raise ValueError("per_family must be at least 0")
    handles = authors(seed)
    used: set[tuple[str, str]] = set()
    out: list[tuple[dict[str, Any], LibraryEntry]] = []
    with _gc_paused():
        for index, family in enumerate(families):
            rng = random.Random(f"{seed}:{family.key}")
            for n in range(per_family):
                out.append(_row(rng, family, index, n, seed, handles, used))
    return out


def tag_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The `adaptertag` rows the catalog's `replace_tags` writes for an adapter row."""
    wanted = wanted_tags(row["tags"], row["user_tags"])
    return [{"adapter_id": row["id"], "tag": tag, "is_user": user} for tag, user in wanted.items()]


_JSON_COLUMNS = frozenset(c.name for c in Adapter.__table__.columns if isinstance(c.type, JSON))


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    """None in a JSON column as SQL NULL (what the importer leaves), not JSON 'null'."""
    return {k: null() if v is None and k in _JSON_COLUMNS else v for k, v in row.items()}


def insert_rows(engine: Engine, rows: Sequence[dict[str, Any]], *, chunk: int = 5000) -> None:
    """Bulk-insert adapter rows with their `adaptertag` rows and, on SQLite, `adapter_fts`
    rows, with Core executemany in one transaction. The database must be at head.

    On SQLite the connection's page cache is raised to 256 MiB for the transaction (every
    adapter insert touches some twenty indexes) and put back after it."""
    fts = text("INSERT INTO adapter_fts (adapter_id, body) VALUES (:id, :body)")
    sqlite = engine.dialect.name == "sqlite"
    with _gc_paused(), engine.connect() as conn:
        previous = None
        if sqlite:
            previous = int(conn.exec_driver_sql("PRAGMA cache_size").scalar_one())
            conn.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_LOAD_CACHE_KIB}")
        try:
            for start in range(0, len(rows), chunk):
                part = rows[start : start + chunk]
                conn.execute(insert(Adapter.__table__), [_stored(row) for row in part])
                tags = [tag for row in part for tag in tag_rows(row)]
                if tags:
                    conn.execute(insert(AdapterTag.__table__), tags)
                if sqlite:
                    conn.execute(
                        fts, [{"id": r["id"], "body": r["search_text"] or ""} for r in part]
                    )
            conn.commit()
        finally:
            if previous is not None:
                conn.exec_driver_sql(f"PRAGMA cache_size={previous}")


def insert_library(
    engine: Engine, per_family: int, seed: int = 7, families: Iterable[Family] = FAMILIES
) -> list[LibraryEntry]:
    """Load `build_rows(per_family, seed, families)` into a database migrated to head, in
    one transaction, and return the entries (in row order).

    On a 2-core machine shared with other work (load average ~3), 10,000 adapters take
    ~4 s of CPU (5-6 s wall) and 100,000 ~45 s of CPU (60-66 s wall): ~10 s builds the
    rows, the rest is SQLite maintaining the adapter table's ~20 indexes, adaptertag and
    adapter_fts."""
    built = build_rows(per_family, seed, families)
    insert_rows(engine, [row for row, _ in built])
    return [entry for _, entry in built]


# --- judging -----------------------------------------------------------------------------


def precision_at_k(
    results: dict[str, list[str]], entries: Iterable[LibraryEntry], k: int = 5
) -> float:
    """Mean over queries of (results among the first k that are in the query's family) / k.

    `results` maps a query adapter id to result ids, best first. Fewer than k results, or
    ids of no entry, count as misses; leave the query itself out of its results (it would
    count as a hit). Raises ValueError for no queries, k < 1 or a query id of no entry.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    if not results:
        raise ValueError("no queries")
    family_of = {entry.id: entry.family for entry in entries}
    total = 0.0
    for query, found in results.items():
        if query not in family_of:
            raise ValueError(f"query {query!r} is not in the library")
        family = family_of[query]
        total += sum(family_of.get(result) == family for result in found[:k]) / k
    return total / len(results)
