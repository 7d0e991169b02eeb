"""A deterministic built-in synthetic instruction data set (`python -m trainer make-data DIR`).

Nothing is downloaded: fictional people with made-up facts (knowledge), and small arithmetic,
string and list tasks (skills), all drawn from one seed with the standard library only.

Files written into the output folder (JSONL, one object per line, UTF-8):

- ``knowledge_pretrain.jsonl``: paragraphs of facts, one ``pretraining`` message each.
- ``knowledge_train.jsonl``: questions about those facts, as chat.
- ``skills_train.jsonl``: arithmetic / strings / lists tasks, as chat, answers short and canonical.
- ``train.jsonl``: all three above, mixed and shuffled (the "stacked" set, ``n_train`` lines).
- ``eval.jsonl``: held-out items, each with an ``objective``: ``skill`` (exact match against
  ``reference``), ``knowledge`` (multiple choice: ``choices`` and the ``answer`` index) or ``loss``.
- ``manifest.json``: the summary returned by :func:`make_data` (paths relative to the folder).

Hold-out: every skill task has a key (its operands); a stable hash puts about one key in eight
on the eval side, and training never draws an eval-side key. Knowledge eval asks about the same
facts that training teaches, but with question templates that training never uses.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import Counter
from pathlib import Path

SKILL_DOMAINS = ("arithmetic", "strings", "lists")
EVAL_SLICE = 8  # one task key in EVAL_SLICE is reserved for evaluation

_SYLLABLES = ("ta", "li", "mor", "vex", "ka", "ren", "do", "sa", "vi", "lo", "nar", "bel",
              "tor", "mi", "quen", "ra", "zu", "fen", "ol", "dar", "is", "pe", "gan", "ul")
VOCAB = {
    "city": ("Kelmoor", "Ostravel", "Duneport", "Marrowick", "Ashgrove", "Tallowmere", "Quenby",
             "Rookhaven", "Evershaw", "Pellinor", "Brightwater", "Harrowdale"),
    "profession": ("glassblower", "baker", "pilot", "tailor", "architect", "beekeeper",
                   "cartographer", "blacksmith", "librarian", "engineer", "potter", "astronomer"),
    "birth_year": tuple(str(year) for year in range(1940, 2006)),
    "colour": ("teal", "crimson", "amber", "violet", "ochre", "indigo", "scarlet", "olive",
               "turquoise", "magenta", "maroon", "lavender"),
    "pet": ("cat", "dog", "ferret", "parrot", "tortoise", "rabbit", "hamster", "goldfish",
            "iguana", "hedgehog", "canary", "owl"),
}
ATTRIBUTES = tuple(VOCAB)

# {n}: the person's name, {v}: the value, {a}: "a" or "an" for the value.
_FACTS = {
    "city": ("{n} lives in {v}.", "{n}'s home city is {v}.", "{n} has made a home in {v}."),
    "profession": ("{n} works as {a} {v}.", "By trade, {n} is {a} {v}.", "{n} earns a living as {a} {v}."),
    "birth_year": ("{n} was born in {v}.", "{n}'s birth year is {v}."),
    "colour": ("{n}'s favourite colour is {v}.", "{n} likes {v} more than any other colour."),
    "pet": ("{n} keeps {a} {v} as a pet.", "{n} has a pet {v}."),
}
_TRAIN_QUESTIONS = {
    "city": ("Where does {n} live?", "What is the home city of {n}?", "In which city does {n} live?"),
    "profession": ("What is the profession of {n}?", "What does {n} do for a living?"),
    "birth_year": ("In what year was {n} born?", "When was {n} born?"),
    "colour": ("What is {n}'s favourite colour?", "Which colour does {n} like best?"),
    "pet": ("What pet does {n} have?", "What kind of animal does {n} keep as a pet?"),
}
# Used only in eval.jsonl, so no eval prompt is ever seen verbatim in training.
_EVAL_QUESTIONS = {
    "city": "Which city is home to {n}?",
    "profession": "Which job does {n} have?",
    "birth_year": "Which year was {n} born in?",
    "colour": "Which colour is the favourite of {n}?",
    "pet": "Which animal does {n} keep as a pet?",
}
_SHORT_SUFFIXES = (" Answer in one word.", " Reply with just the answer.")
_DOC_OPENERS = ("", "Here are some facts about {n}. ", "This note describes {n}. ",
                "A short profile of {n} follows. ")
_SYSTEM_PROMPTS = ("You are a helpful assistant.",
                   "You are a careful assistant. Give short, exact answers.",
                   "You answer questions concisely and never add explanations.")
_PREAMBLES = ("", "", "", "Quick question. ",
              "I am checking my homework and want to be sure I got this right. ",
              "My friend and I disagree about the answer to the following problem, so please "
              "settle it for us once and for all. We have been arguing about it all afternoon. ")
_NUMBER_FORMATS = ("", "", " Answer with just the number.", " Reply with the number only, no explanation.")
_WORD_FORMATS = ("", "", " Answer with just the word.", " Reply with the result only.")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _fact(template: str, name: str, value: str) -> str:
    return template.format(n=name, v=value, a=_article(value))


def _word(rng: random.Random, lo: int, hi: int) -> str:
    """A made-up lowercase word of lo..hi syllables, never the same syllable twice in a row."""
    count, syllables = rng.randint(lo, hi), [rng.choice(_SYLLABLES)]
    while len(syllables) < count:
        syllables.append(rng.choice([s for s in _SYLLABLES if s != syllables[-1]]))
    return "".join(syllables)


def _is_eval_key(key: tuple) -> bool:
    """Stable (seed-independent) split of a task space into train and eval slices."""
    return zlib.crc32(repr(key).encode()) % EVAL_SLICE == 0


def _make_entities(rng: random.Random, n: int) -> list[dict]:
    """Fictional people: a unique two-word name plus one value per attribute."""
    names: set[str] = set()
    entities = []
    while len(entities) < n:
        name = f"{_word(rng, 2, 3).capitalize()} {_word(rng, 1, 2).capitalize()}"
        if name in names or len(name.split()[1]) < 3:
            continue
        names.add(name)
        entities.append({"name": name, **{attr: rng.choice(VOCAB[attr]) for attr in ATTRIBUTES}})
    return entities


def _chat(rng: random.Random, prompt: str, answer: str, domain: str, system_rate: float) -> dict:
    messages = []
    if rng.random() < system_rate:
        messages.append({"role": "system", "content": rng.choice(_SYSTEM_PROMPTS)})
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return {"messages": messages, "domain": domain}


# --- knowledge ---------------------------------------------------------------------------

def _pretrain_doc(rng: random.Random, ent: dict) -> dict:
    """One paragraph stating every fact about one person, in a random order and wording."""
    attrs = list(ATTRIBUTES)
    rng.shuffle(attrs)
    sentences = [_fact(rng.choice(_FACTS[attr]), ent["name"], ent[attr]) for attr in attrs]
    text = rng.choice(_DOC_OPENERS).format(n=ent["name"]) + " ".join(sentences)
    return {"messages": [{"role": "pretraining", "content": text}], "domain": "knowledge_pretrain"}


def _knowledge_qa(rng: random.Random, ent: dict, attr: str) -> dict:
    question = rng.choice(_TRAIN_QUESTIONS[attr]).format(n=ent["name"])
    if rng.random() < 0.5:  # short answers teach the reply style the multiple-choice eval expects
        return _chat(rng, question + rng.choice(_SHORT_SUFFIXES), ent[attr], "knowledge", 0.3)
    return _chat(rng, question, _fact(_FACTS[attr][0], ent["name"], ent[attr]), "knowledge", 0.3)


def _knowledge_mc(rng: random.Random, ent: dict, attr: str) -> dict:
    choices = [ent[attr]] + rng.sample([v for v in VOCAB[attr] if v != ent[attr]], 3)
    rng.shuffle(choices)
    prompt = (_EVAL_QUESTIONS[attr].format(n=ent["name"]) + " Choose one of: "
              + ", ".join(choices) + ". Reply with the option only.")
    return {"messages": [{"role": "user", "content": prompt}], "choices": choices,
            "answer": choices.index(ent[attr]), "domain": "knowledge", "objective": "knowledge"}


def _knowledge_loss(rng: random.Random, ent: dict, attr: str) -> dict:
    prompt = "Tell me this fact: " + _EVAL_QUESTIONS[attr].format(n=ent["name"])
    item = _chat(rng, prompt, _fact(_FACTS[attr][0], ent["name"], ent[attr]), "knowledge", 0.0)
    return {**item, "objective": "loss"}


# --- skills: each returns (key, question, canonical answer) -----------------------------

def _arithmetic(rng: random.Random) -> tuple[tuple, str, str]:
    op = rng.choice(("add", "sub", "mul"))
    if op == "mul":
        a, b = rng.randint(2, 20), rng.randint(2, 12)
        question = rng.choice(("What is {a} * {b}?", "What is {a} times {b}?", "Multiply {a} by {b}.",
                               "Compute the product of {a} and {b}."))
        answer = a * b
    elif op == "add":
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        question = rng.choice(("What is {a} + {b}?", "What is {a} plus {b}?", "Add {a} and {b}.",
                               "Compute the sum of {a} and {b}."))
        answer = a + b
    else:
        a, b = sorted((rng.randint(0, 99), rng.randint(0, 99)), reverse=True)
        question = rng.choice(("What is {a} - {b}?", "What is {a} minus {b}?", "Subtract {b} from {a}.",
                               "Compute the difference {a} minus {b}."))
        answer = a - b
    return ("arithmetic", op, a, b), question.format(a=a, b=b) + rng.choice(_NUMBER_FORMATS), str(answer)


def _strings(rng: random.Random) -> tuple[tuple, str, str]:
    word = _word(rng, 2, 4)
    task = rng.choice(("reverse", "upper", "count", "length"))
    if task == "reverse":
        question = rng.choice(("Reverse the word '{w}'.", "Write '{w}' backwards.",
                               "What is '{w}' spelled backwards?"))
        answer, formats = word[::-1], _WORD_FORMATS
    elif task == "upper":
        question = rng.choice(("Convert '{w}' to uppercase.", "Write the word '{w}' in capital letters."))
        answer, formats = word.upper(), _WORD_FORMATS
    elif task == "count":
        letter = rng.choice(word) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        question = rng.choice((f"How many times does the letter '{letter}' appear in '{{w}}'?",
                               f"Count the occurrences of the letter '{letter}' in the word '{{w}}'."))
        answer, formats = str(word.count(letter)), _NUMBER_FORMATS
    else:
        question = rng.choice(("How many letters does the word '{w}' have?", "How long is the word '{w}'?"))
        answer, formats = str(len(word)), _NUMBER_FORMATS
    return ("strings", word), question.format(w=word) + rng.choice(formats), answer


def _lists(rng: random.Random) -> tuple[tuple, str, str]:
    numbers = [rng.randint(0, 99) for _ in range(rng.randint(3, 15))]
    shown = rng.choice(("[{}]", "{}")).format(", ".join(map(str, numbers)))
    task = rng.choice(("sort", "max", "min", "last"))
    if task == "sort":
        question = rng.choice(("Sort these numbers in ascending order: {l}.",
                               "Arrange the following list from smallest to largest: {l}."))
        answer = ", ".join(map(str, sorted(numbers)))
        suffix = rng.choice(("", " Reply with the numbers separated by commas."))
    else:
        question = {"max": "What is the largest number in this list: {l}?",
                    "min": "What is the smallest number in this list: {l}?",
                    "last": "What is the last element of the list {l}?"}[task]
        answer = str({"max": max(numbers), "min": min(numbers), "last": numbers[-1]}[task])
        suffix = rng.choice(_NUMBER_FORMATS)
    return ("lists", tuple(numbers)), question.format(l=shown) + suffix, answer


_SKILLS = {"arithmetic": _arithmetic, "strings": _strings, "lists": _lists}


def _skill(rng: random.Random, domain: str, for_eval: bool, system_rate: float) -> dict:
    """Draw a task from the train or the eval slice of its domain and dress it as a chat."""
    while True:
        key, question, answer = _SKILLS[domain](rng)
        if _is_eval_key(key) == for_eval:
            return _chat(rng, rng.choice(_PREAMBLES) + question, answer, domain, system_rate)


# --- assembling the files ----------------------------------------------------------------

def _check_args(seed, n_train, n_eval, n_entities) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    for name, value in (("n_train", n_train), ("n_eval", n_eval), ("n_entities", n_entities)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def make_data(out_dir: str | Path, seed: int = 0, n_train: int = 2000, n_eval: int = 200,
              n_entities: int = 60) -> dict:
    """Write the synthetic data set into ``out_dir`` and return its summary (also ``manifest.json``).

    ``n_train`` is the number of lines of ``train.jsonl``: one fifth pretraining paragraphs, three
    tenths knowledge questions, the rest skill tasks. ``n_eval`` lines of ``eval.jsonl``: two fifths
    exact-match skill items, two fifths multiple-choice knowledge items, the rest loss items.
    The same arguments always give byte-identical files.
    """
    _check_args(seed, n_train, n_eval, n_entities)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"sweepd-synthetic:{seed}")
    entities = _make_entities(rng, n_entities)

    n_pretrain, n_knowledge = n_train // 5, n_train * 3 // 10
    pretrain = [_pretrain_doc(rng, entities[i % n_entities]) for i in range(n_pretrain)]
    known = entities[:min(n_pretrain, n_entities)] or entities  # people whose facts are in pretraining
    facts = [(ent, attr) for ent in known for attr in ATTRIBUTES]
    rng.shuffle(facts)
    knowledge = [_knowledge_qa(rng, *facts[i % len(facts)]) for i in range(n_knowledge)]
    n_skills = n_train - n_pretrain - n_knowledge
    skills = [_skill(rng, SKILL_DOMAINS[i % 3], False, 0.3) for i in range(n_skills)]
    train = pretrain + knowledge + skills
    rng.shuffle(train)

    n_exact, n_mc = n_eval * 2 // 5, n_eval * 2 // 5
    exact = []
    for i in range(n_exact):
        item = _skill(rng, SKILL_DOMAINS[i % 3], True, 0.0)
        exact.append({**item, "reference": item["messages"][-1]["content"], "objective": "skill"})
    mc = [_knowledge_mc(rng, *facts[i % len(facts)]) for i in range(n_mc)]
    loss = []
    for i in range(n_eval - n_exact - n_mc):
        domain = (*SKILL_DOMAINS, "knowledge")[i % 4]
        if domain == "knowledge":
            loss.append(_knowledge_loss(rng, *rng.choice(facts)))
        else:
            loss.append({**_skill(rng, domain, True, 0.0), "objective": "loss"})
    evaluation = exact + mc + loss
    rng.shuffle(evaluation)

    outputs = {"knowledge_pretrain.jsonl": pretrain, "knowledge_train.jsonl": knowledge,
               "skills_train.jsonl": skills, "train.jsonl": train, "eval.jsonl": evaluation}
    for name, rows in outputs.items():
        _write_jsonl(out / name, rows)
    manifest = {
        "seed": seed,
        "n_entities": n_entities,
        "files": {name: {"path": name, "lines": len(rows)} for name, rows in outputs.items()},
        "domains": {name: dict(sorted(Counter(r["domain"] for r in rows).items()))
                    for name, rows in outputs.items()},
        "objectives": dict(sorted(Counter(r["objective"] for r in evaluation).items())),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    summary = {**manifest, "manifest": str(out / "manifest.json")}
    summary["files"] = {name: {"path": str(out / name), "lines": info["lines"]}
                        for name, info in manifest["files"].items()}
    return summary
