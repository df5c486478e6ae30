"""Synthetic long multi-session dialogues with known evidence turns, for AIM-Memory recall.

``generate(seed)`` writes one two-person conversation of ``sessions`` dated sessions (about 20
turns each, ~480 turns in all) and questions about it, each with the ids of the turns that hold
its answer. Deterministic for a seed.

What makes it hard on purpose (and what keeps it honest):
- both people have the same kinds of facts (a pet, a job, a trip, a purchase, a race, a
  sibling, ...) with different values, so the question's person matters;
- facts change (a job, then a new job): "now" questions need the later turn, "before" ones the
  earlier, and the earlier one never names the later employer the question mentions;
- questions never contain the answer; about half are fully paraphrased (kitten -> cat, flat ->
  apartment, couch -> sofa, got back from -> travelled to, allergic -> avoid), the rest share
  one content word with the evidence ("adopted", "married", "lease"), as real questions often
  do, and that word also appears in distractors, so a string match alone does not find the turn;
- distractors share the topic words: reactions of the other person, small talk about pets,
  weddings, running, work, prices, books, and filler chat;
- some questions name only a date ("on 7 May 2023") and need the turn's timestamp; some need
  two turns (multi-hop); each question has a ``kind`` so results can be read per kind.
"""
from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

NAMES = ["Maria", "Tom", "Aisha", "Kenji", "Lucia", "Oskar", "Priya", "Diego", "Hannah", "Malik",
         "Sofia", "Ivan", "Chloe", "Ravi", "Elena", "Samuel", "Nadia", "Felix", "Grace", "Omar",
         "Ingrid", "Pablo", "Yara", "Lukas", "Zoe", "Mateo", "Leila", "Jonas", "Amara", "Victor"]
CITIES = ["Lisbon", "Porto", "Valencia", "Krakow", "Ghent", "Bologna", "Seville", "Tallinn", "Leipzig",
          "Lyon", "Gothenburg", "Bergen", "Salzburg", "Ljubljana", "Edinburgh", "Bordeaux", "Turin",
          "Utrecht", "Brno", "Aarhus", "Cork", "Nantes", "Graz", "Malaga"]
LANDMARKS = ["old harbour", "cathedral", "river promenade", "botanical garden", "castle hill", "market hall"]
COMPANIES = ["Brightline", "Koru Labs", "Northwind", "Tessellate", "Bluefin Analytics", "Ardent Health",
             "Quillon", "Meridian Freight", "Solstice Games", "Harbor & Vale", "Cinder Robotics", "Pellucid"]
JOBS = ["data analyst", "product manager", "nurse practitioner", "UX designer", "civil engineer",
        "accountant", "backend developer", "marketing lead", "lab technician", "logistics planner"]
PETS = [("kitten", "cat", "her"), ("puppy", "dog", "him"), ("bunny", "rabbit", "her"),
        ("parakeet", "bird", "him"), ("tortoise", "reptile", "her"), ("hamster", "rodent", "him"),
        ("goldfish", "fish", "her"), ("ferret", "pet ferret", "him")]
PET_ADJ = ["tiny grey", "shy ginger", "very fluffy", "black-and-white", "scruffy little", "sleepy brown"]
PET_NAMES = ["Pixel", "Biscuit", "Mochi", "Juniper", "Pepper", "Waffles", "Nimbus", "Clementine",
             "Bramble", "Tofu", "Marzipan", "Olive"]
ITEMS = [("couch", "sofa"), ("fridge", "refrigerator"), ("bike", "bicycle"), ("laptop", "computer"),
         ("car", "vehicle"), ("TV", "television"), ("mattress", "bed"), ("washing machine", "washer"),
         ("phone", "smartphone"), ("desk chair", "office chair"), ("camera", "DSLR"), ("oven", "cooker")]
RACES = [("half marathon", "21-kilometre race", "1:52:40"), ("city 10K", "ten-kilometre run", "48:12"),
         ("trail ultra", "mountain ultramarathon", "6:31:05"), ("charity 5K", "five-kilometre fun run", "27:33"),
         ("Olympic triathlon", "swim-bike-run event", "2:41:09"), ("marathon", "42-kilometre race", "3:58:20")]
RELATIONS = [("sister", "sibling"), ("brother", "sibling"), ("cousin", "relative")]
SUBJECTS = ["marine biology", "architecture", "economics", "veterinary medicine", "linguistics",
            "mechanical engineering", "art history", "pharmacology"]
DEGREES = ["master's", "PhD", "bachelor's"]
INSTRUMENTS = [("cello", "string instrument"), ("piano", "keyboard instrument"),
               ("trumpet", "brass instrument"), ("drums", "percussion"), ("violin", "string instrument")]
ALLERGENS = [("shellfish", "seafood"), ("peanuts", "nuts"), ("gluten", "wheat"), ("sesame", "seeds"),
             ("kiwi", "fruit")]
BOOKS = [("The Salt Road", "Ines Albrecht"), ("Nine Quiet Rivers", "Tomas Hale"),
         ("A Map of Small Fires", "Wen Okafor"), ("The Lantern Keeper", "Rosa Lindqvist"),
         ("Winter in Cadiz", "Marco Sterne"), ("The Glass Orchard", "Dana Whitlock"),
         ("Paper Moons", "Ada Ferreira"), ("The Last Ferry", "Hugo Brandt")]
DISTRICTS = ["the old town", "a quiet suburb", "the university quarter", "the docklands", "the north side"]

SMALL_TALK = [  # filled from FILL: thousands of distinct lines, so fillers are not near-duplicates
    "I {did} {when}, it was {feeling}.", "{When}, I {did}. Honestly {feeling}.",
    "Have you ever {did}? I did {when} and it was {feeling}.", "My {friend} and I {did} {when}.",
    "The weather has been {weather} {when}, so I mostly stayed in.", "I'm thinking about {plan} {soon}.",
    "Did you see the news about the {news}? Everyone at work is talking about it.",
    "I can't believe it's already {month}, this year is flying by.",
    "We had {food} for dinner {when}, {feeling}.", "Our {neighbour} is {noise} again, since {hour} this morning.",
]
FILL = {
    "did": ["cleaned out the garage", "watched a crime series", "tried a new bakery", "fixed the kitchen tap",
            "went to a pottery class", "walked along the canal", "visited a flea market", "repainted the hallway",
            "played board games", "went to the cinema", "baked banana bread", "reorganised my wardrobe",
            "finished a jigsaw puzzle", "went bowling", "had a picnic in the park"],
    "when": ["yesterday", "last night", "on Saturday", "this morning", "over the weekend", "on Tuesday evening",
             "after work", "at lunchtime"],
    "feeling": ["pretty relaxing", "a bit of a disaster", "more fun than expected", "exhausting",
                "really nice actually", "a total waste of time", "surprisingly great"],
    "friend": ["flatmate", "colleague", "neighbour", "old school friend", "partner", "gym buddy"],
    "weather": ["grey and rainy", "weirdly warm", "freezing", "so windy", "humid"],
    "plan": ["signing up for a dance class", "learning to bake sourdough", "starting a vegetable patch",
             "taking a photography course", "joining a climbing gym", "doing a digital detox"],
    "soon": ["next month", "this summer", "after the holidays", "once things calm down"],
    "news": ["train strike", "new tram line", "festival lineup", "bridge repairs", "election debate"],
    "month": ["March", "June", "September", "November"],
    "food": ["homemade pizza", "leftover curry", "a huge salad", "takeaway noodles", "pancakes"],
    "neighbour": ["upstairs neighbour", "landlord", "next-door neighbour"],
    "noise": ["drilling", "hammering", "playing loud music", "moving furniture"],
    "hour": ["7", "6:30", "8"],
}
TOPIC_CHATTER = {
    "pet": ["Aww, I love animals! My neighbour's {animal} keeps sneaking into our garden.",
            "Do you know a good vet around here? Ours retired.",
            "Pets are so much work, but totally worth it."],
    "job": ["Work has been hectic, I barely see daylight these days.",
            "Job hunting is exhausting, I remember how stressful interviews were.",
            "My manager wants everyone back in the office three days a week."],
    "trip": ["Weddings are lovely but so tiring, all that dancing!",
             "I'd love to travel more this year, maybe somewhere by the sea.",
             "Airports stress me out, I always arrive way too early."],
    "purchase": ["Everything is so expensive these days, prices keep going up.",
                 "I'm saving up for new furniture, our living room looks tired."],
    "race": ["I should really start running again, I've been so lazy.",
             "Marathon runners amaze me, I can barely run for a bus."],
    "sibling": ["Family group chats are chaos, there are forty messages every morning.",
                "University fees are so high now, it's crazy."],
    "music": ["I always wanted to learn an instrument but never had the patience.",
              "There's a free concert in the park next weekend."],
    "health": ["I've been trying to eat more vegetables and less sugar.",
               "Doctor appointments take forever to get these days."],
    "book": ["I haven't read a real book in months, just articles on my phone.",
             "Our book club keeps picking really long novels."],
    "home": ["Rents in this city are getting ridiculous.",
             "Moving house is the worst, all those boxes."],
}
def small_talk(rng: random.Random) -> str:
    """One filler line from SMALL_TALK and FILL."""
    line = rng.choice(SMALL_TALK)
    for key, values in FILL.items():
        line = line.replace("{" + key + "}", rng.choice(values))
        line = line.replace("{" + key.capitalize() + "}", rng.choice(values).capitalize())
    return line


def _a(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


REACTIONS = ["That's wonderful news, congratulations!", "Wow, I didn't see that coming. How do you feel?",
             "Oh nice, you have to tell me more next time.", "Haha, that sounds like a lot of fun.",
             "Good for you, you really deserve it.", "Oh no, that sounds stressful. Hang in there."]
GREETINGS = ["Hey {o}! How have you been?", "Hi {o}, long time no talk!", "Morning {o}! Got a minute to chat?"]
REPLIES = ["Pretty good, busy week though. You?", "Not bad at all, thanks for asking!", "Hey! All good here."]
CLOSINGS = ["Anyway, I should get going. Talk soon!", "Gotta run, let's catch up again next week.",
            "It was great chatting, take care!"]


@dataclass
class Turn:
    """One line of the dialogue: id (0-based, in order), session, speaker, text, ISO timestamp."""

    id: int
    session: int
    speaker: str
    text: str
    timestamp: str


@dataclass
class Question:
    text: str
    evidence: list[int]
    kind: str


@dataclass
class Dialogue:
    seed: int
    speakers: tuple[str, str]
    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


@dataclass
class _Event:
    """Lines (speaker index 0/1 relative to the fact's owner, text) and, once placed, turn ids."""

    kind: str
    lines: list[tuple[int, str]]
    evidence_line: int = 0
    ids: list[int] = field(default_factory=list)
    values: dict = field(default_factory=dict)


def _date_text(rng: random.Random, day: dt.date) -> str:
    forms = [f"{day.day} {day:%B} {day.year}", f"{day:%B} {day.day}, {day.year}"]
    return rng.choice(forms)


def _facts(rng: random.Random, who: str, pools: dict) -> dict[str, list[_Event]]:
    """Every fact event of one person (values drawn without replacement from ``pools``); kinds
    with several events (two pets, two trips, three purchases, two races, two books) give the
    questions same-kind distractors from the same person."""
    take = lambda key: pools[key].pop(rng.randrange(len(pools[key])))  # noqa: E731
    react = lambda: rng.choice(REACTIONS)  # noqa: E731
    ev: dict[str, list[_Event]] = {"pet": [], "trip": [], "purchase": [], "race": [], "book": []}
    word, syn, pron = take("pets")
    pet = take("pet_names")
    ev["pet"].append(_Event("pet", [(0, rng.choice([
        f"We finally brought home {_a(rng.choice(PET_ADJ))} {word} from the shelter, {pron} name is {pet}.",
        f"Guess what, we adopted {_a(rng.choice(PET_ADJ))} {word} last weekend! We called {pron} {pet}."])),
        (1, react())], values={"syn": syn, "word": word}))
    word2, _, pron2 = take("pets")
    ev["pet"].append(_Event("pet", [(0, f"I'm looking after my friend's {word2} {take('pet_names')} this week, "
                                        f"{pron2} is adorable but so much work."), (1, react())]))
    company, company2 = take("companies"), take("companies")
    job, job2 = take("jobs"), take("jobs")
    ev["job"] = [_Event("job", [(0, f"I got the offer! Starting next month I'll be working as {_a(job)} at {company}."),
                                (1, react())]),
                 _Event("job", [(0, f"I handed in my notice at {company}, from Monday I'm working as {_a(job2)} "
                                    f"for {company2}."), (1, react())], values={"company2": company2})]
    city, cousin = take("cities"), take("names")
    ev["trip"].append(_Event("trip", [(0, f"Just got back from {city}! My cousin {cousin} got married there and we "
                                          f"stayed right by the {rng.choice(LANDMARKS)}."),
                                      (1, "Weddings abroad sound amazing, was the food good?"),
                                      (0, "The food was incredible, I ate way too much.")]))
    ev["trip"].append(_Event("trip", [(0, f"I'm off to {take('cities')} on Thursday for a two-day workshop, "
                                          f"the hotel is right next to the {rng.choice(LANDMARKS)}."),
                                      (1, "Safe travels, don't work too hard!")]))
    for _ in range(3):
        item, item_syn = take("items")
        price = rng.choice([389, 450, 649, 799, 1150, 1290, 2300, 14500])
        ev["purchase"].append(_Event("purchase", [(0, rng.choice([
            f"We finally replaced the old {item}, the new one cost ${price:,} after the discount.",
            f"I ordered a new {item} online, ${price:,} including delivery."])),
            (1, "Not cheap, but you'll use it every day.")], values={"item_syn": item_syn, "item": item}))
    for _ in range(2):
        race, race_syn, finish = take("races")
        ev["race"].append(_Event("race", [(0, f"I did the {race} on Sunday and finished in {finish}, a personal best!"),
                                          (1, react())], values={"race_syn": race_syn, "race": race}))
    rel, rel_syn = take("relations")
    sib, city2 = take("names"), take("cities")
    ev["sibling"] = [_Event("sibling", [(0, f"My {rel} {sib} just moved to {city2} to start "
                                            f"{_a(rng.choice(DEGREES))} in {take('subjects')}."),
                                        (1, "That's a big step, I hope they settle in quickly.")],
                            values={"rel": rel, "rel_syn": rel_syn, "sib": sib})]
    instrument, family = take("instruments")
    ev["music"] = [_Event("music", [(0, f"I've been taking {instrument} lessons since spring, I practise about "
                                        f"{rng.choice([3, 4, 5, 6, 8, 10])} hours a week now."), (1, react())],
                          values={"family": family, "instrument": instrument})]
    allergen, group = take("allergens")
    ev["health"] = [_Event("health", [(0, f"Turns out I'm allergic to {allergen}, the doctor confirmed it after the tests."),
                                      (1, "Oh no, that must change a lot of what you cook.")],
                           values={"group": group, "allergen": allergen})]
    for _ in range(2):
        book, author = take("books")
        ev["book"].append(_Event("book", [(0, rng.choice([f"I just finished '{book}' by {author}, I couldn't put it down.",
                                                          f"I started '{book}' by {author} but I'm not sure I like it yet."])),
                                          (1, "I'll add it to my list, I need something new to read.")]))
    ev["home"] = [_Event("home", [(0, f"We signed the lease on a {rng.choice([48, 55, 62, 68, 74, 85, 96])}-square-metre "
                                      f"flat in {rng.choice(DISTRICTS)}."), (1, react())])]
    return ev


def _questions(rng: random.Random, who: str, ev: dict[str, list[_Event]],
               dates: dict[int, dt.date], session_of: dict[int, int]) -> list[Question]:
    """About half the templates share one content word with the evidence (as real questions
    often do: "adopted", "married", "lease"); the rest are fully paraphrased. Distractors share
    those words too (the other person's events, the same person's other events, chatter)."""
    pick = rng.choice
    out = []

    def q(kind: str, text: str, events: list[_Event]) -> None:
        out.append(Question(text, [e.ids[e.evidence_line] for e in events], kind))

    def when(event: _Event) -> str:
        return _date_text(rng, dates[session_of[event.ids[0]]])

    pet = ev["pet"][0]
    q("single-hop", pick([f"What did {who} name the {pet.values['syn']} from the shelter?",
                          f"What is {who}'s own pet {pet.values['syn']} called?",
                          f"What name did {who} give the {pet.values['word']} that was adopted?"]), [pet])
    first, second = ev["job"]
    q("knowledge-update", pick([f"Who does {who} work for these days?", f"Where is {who} employed at the moment?",
                                f"Which company is {who} working for after handing in the notice?"]), [second])
    q("knowledge-update", pick([f"Which job did {who} take before moving to {second.values['company2']}?",
                                f"What was {who}'s job offer before the switch to {second.values['company2']}?"]), [first])
    trip = ev["trip"][0]
    q("single-hop", pick([f"Which city did {who} travel to for a family wedding?",
                          f"Where did {who}'s cousin get married?"]), [trip])
    q("temporal", f"Which place had {who} just returned from on {when(trip)}?", [trip])
    buys = ev["purchase"]
    target = pick(buys)
    q("single-hop", pick([f"How much did {who} spend on the new {target.values['item_syn']}?",
                          f"How much did {who} pay for the new {target.values['item']}?"]), [target])
    target = pick(buys)
    q("temporal", f"What did {who} buy around {when(target)}?", [target])
    race = pick(ev["race"])
    q("single-hop", pick([f"What was {who}'s finishing time in the {race.values['race_syn']}?",
                          f"How fast did {who} finish the {race.values['race']}?"]), [race])
    sib = ev["sibling"][0]
    q("single-hop", pick([f"In which city is {who}'s {sib.values['rel_syn']} studying now?",
                          f"What subject is {sib.values['sib']} studying?",
                          f"Where did {who}'s {sib.values['rel']} move to study?"]), [sib])
    music = ev["music"][0]
    q("single-hop", pick([f"How many hours per week does {who} practise the {music.values['family']}?",
                          f"Which {music.values['family']} is {who} learning to play?",
                          f"How often does {who} practise the {music.values['instrument']}?"]), [music])
    health = ev["health"][0]
    q("single-hop", pick([f"Which {health.values['group']} does {who} have to avoid for health reasons?",
                          f"What is {who} allergic to?"]), [health])
    book = pick(ev["book"])
    q("temporal", f"Which novel was {who} reading on {when(book)}?", [book])
    home = ev["home"][0]
    q("single-hop", pick([f"How big is the apartment {who} rented?",
                          f"What size is the flat {who} signed the lease on?"]), [home])
    q("multi-hop", f"Did {who}'s {sib.values['rel']} move to the same city where the cousin's wedding was?", [sib, trip])
    q("multi-hop", f"Which two novels did {who} mention reading?", ev["book"])
    return out


def generate(seed: int, sessions: int = 24) -> Dialogue:
    """One dialogue (see the module docstring); deterministic for ``seed``."""
    rng = random.Random(seed)
    a, b = rng.sample(NAMES, 2)
    pools = {"pets": list(PETS), "pet_names": list(PET_NAMES), "companies": list(COMPANIES),
             "jobs": list(JOBS), "cities": list(CITIES), "names": [n for n in NAMES if n not in (a, b)],
             "items": list(ITEMS), "races": list(RACES), "relations": list(RELATIONS),
             "subjects": list(SUBJECTS), "instruments": list(INSTRUMENTS), "allergens": list(ALLERGENS),
             "books": list(BOOKS)}
    facts = {a: _facts(rng, a, pools), b: _facts(rng, b, pools)}
    # schedule: every event in some session; a job change comes after the first job
    slots: list[tuple[str, _Event]] = [(who, e) for who in (a, b) for es in facts[who].values() for e in es]
    rng.shuffle(slots)
    plan: dict[int, list[tuple[str, _Event]]] = {s: [] for s in range(sessions)}
    for who, e in slots:
        plan[rng.randrange(sessions)].append((who, e))
    for who in (a, b):  # the first job comes in an earlier session than the change
        first, second = facts[who]["job"]
        where = {id(x): sess for sess, es in plan.items() for _, x in es}
        s1, s2 = where[id(first)], where[id(second)]
        if s2 <= s1:
            plan[s1].remove((who, first))
            plan[s2].remove((who, second))
            s1, s2 = (s2, s1) if s2 < s1 else ((s1, s1 + 1) if s1 + 1 < sessions else (s1 - 1, s1))
            plan[s1].append((who, first))
            plan[s2].append((who, second))
    day = dt.date(2022, 1, 3) + dt.timedelta(days=rng.randrange(700))
    dialogue = Dialogue(seed, (a, b))
    dates: dict[int, dt.date] = {}
    session_of: dict[int, int] = {}

    def say(session: int, speaker: str, text: str, minute: int) -> int:
        stamp = dt.datetime(day.year, day.month, day.day, 18, 0) + dt.timedelta(minutes=minute)
        turn = Turn(len(dialogue.turns), session, speaker, text, stamp.isoformat())
        dialogue.turns.append(turn)
        session_of[turn.id] = session
        return turn.id

    for s in range(sessions):
        dates[s] = day
        opener = rng.choice((a, b))
        other = b if opener == a else a
        minute = 0
        lines: list[tuple[str, str, _Event | None, int]] = [
            (opener, rng.choice(GREETINGS).format(o=other), None, 0), (other, rng.choice(REPLIES), None, 0)]
        body: list[list[tuple[str, str, _Event | None, int]]] = []
        for who, e in plan[s]:
            partner = b if who == a else a
            block = [((who if side == 0 else partner), text, e, i) for i, (side, text) in enumerate(e.lines)]
            chatter = rng.choice(TOPIC_CHATTER[e.kind]).format(animal=rng.choice(PETS)[1])
            block.append((rng.choice((a, b)), chatter, None, 0))
            body.append(block)
        for _ in range(rng.randint(8, 12)):
            body.append([(rng.choice((a, b)), small_talk(rng), None, 0)])
        for kind in rng.sample(sorted(TOPIC_CHATTER), 2):
            body.append([(rng.choice((a, b)), rng.choice(TOPIC_CHATTER[kind]).format(animal=rng.choice(PETS)[1]), None, 0)])
        rng.shuffle(body)
        for block in body:
            lines.extend(block)
        lines.append((opener, rng.choice(CLOSINGS), None, 0))
        for speaker, text, e, _ in lines:
            minute += rng.randint(1, 3)
            tid = say(s, speaker, text, minute)
            if e is not None:
                e.ids.append(tid)
        day = day + dt.timedelta(days=rng.randint(4, 15))
    for who in (a, b):
        dialogue.questions.extend(_questions(rng, who, facts[who], dates, session_of))
    return dialogue
