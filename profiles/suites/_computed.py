"""Domains whose gold answers are computed, not typed: arithmetic, reasoning, code reading.

Numbers come from a generator with a fixed seed, and code outputs from running the snippets,
so every gold answer here is correct by construction.
"""

from __future__ import annotations

import contextlib
import io
import random

from profiles.probe import Probe
from profiles.suites._build import Numbered, choice_gold, free, numeric

SEED = 20240611
NAMES = (
    "Anna",
    "Ben",
    "Chloe",
    "David",
    "Emma",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kenji",
    "Lena",
    "Maya",
    "Noah",
    "Omar",
    "Priya",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def arithmetic() -> list[Probe]:
    """Seeded sums, differences, products, quotients, precedence and percentages."""
    rng = random.Random(f"{SEED}:arithmetic")
    next_id = Numbered("arith")
    probes: list[Probe] = []
    for _ in range(8):
        a, b = rng.randint(12, 999), rng.randint(12, 999)
        probes.append(numeric(next_id(), "arithmetic", f"What is {a} + {b}?", a + b))
    for _ in range(6):
        a, b = sorted((rng.randint(10, 999), rng.randint(10, 999)), reverse=True)
        probes.append(numeric(next_id(), "arithmetic", f"What is {a} - {b}?", a - b))
    for _ in range(7):
        a, b = rng.randint(3, 19), rng.randint(3, 19)
        probes.append(numeric(next_id(), "arithmetic", f"What is {a} × {b}?", a * b))
    for _ in range(4):
        b, q = rng.randint(2, 12), rng.randint(3, 25)
        probes.append(numeric(next_id(), "arithmetic", f"What is {b * q} ÷ {b}?", q))
    probes += _precedence_and_percent(rng, next_id)
    probes += _arithmetic_choices(rng, next_id)
    return probes


def _precedence_and_percent(rng: random.Random, next_id: Numbered) -> list[Probe]:
    probes = []
    for _ in range(2):
        a, b, c = rng.randint(2, 20), rng.randint(2, 9), rng.randint(2, 9)
        probes.append(numeric(next_id(), "arithmetic", f"What is {a} + {b} × {c}?", a + b * c))
    a, b, c = rng.randint(2, 20), rng.randint(2, 9), rng.randint(2, 9)
    probes.append(numeric(next_id(), "arithmetic", f"What is ({a} + {b}) × {c}?", (a + b) * c))
    for _ in range(2):
        percent, whole = rng.choice((10, 20, 25, 50)), 20 * rng.randint(2, 30)
        probes.append(
            numeric(
                next_id(), "arithmetic", f"What is {percent}% of {whole}?", percent * whole // 100
            )
        )
    return probes


def _arithmetic_choices(rng: random.Random, next_id: Numbered) -> list[Probe]:
    probes = []
    for _ in range(4):
        a, b = rng.randint(11, 29), rng.randint(3, 9)
        right = a * b
        wrong = (right + b, right - b, right + 10)
        probes.append(
            choice_gold(
                next_id(),
                "arithmetic",
                f"What is {a} × {b}?",
                str(right),
                tuple(str(w) for w in wrong),
            )
        )
    # decimals that compare the other way as whole numbers after the point (9.9 vs 9.11)
    for _ in range(4):
        whole, tenth = rng.randint(1, 20), rng.randint(5, 9)
        longer = rng.choice([n for n in range(11, 50) if n % 10])  # no "5.20": it reads as 5.2
        bigger, smaller = f"{whole}.{tenth}", f"{whole}.{longer}"
        probes.append(
            choice_gold(next_id(), "arithmetic", "Which number is larger?", bigger, (smaller,))
        )
    return probes


SYLLOGISMS = (
    ("All roses are flowers. All flowers need water. Do roses need water?", "Yes"),
    (
        "All cats are animals. Some animals are black. Must some cats be black?",
        "Cannot be determined",
    ),
    ("No fish are mammals. A salmon is a fish. Is a salmon a mammal?", "No"),
    ("If it rains, the ground gets wet. The ground is not wet. Did it rain?", "No"),
    ("If it rains, the ground gets wet. The ground is wet. Did it rain?", "Cannot be determined"),
    ("Every student in the class passed the test. Maria is in the class. Did Maria pass?", "Yes"),
)
YES_NO_UNKNOWN = ("Yes", "No", "Cannot be determined")
REASONING_FREE = (
    "Give a one-sentence argument that the Sun will rise tomorrow.",
    "What is a good way to approach a problem you have never seen before? Answer in one sentence.",
    "I have two coins worth 30 cents in total, and one of them is not a nickel. "
    "What are the two coins? Explain briefly.",
)


def reasoning() -> list[Probe]:
    """Orderings, syllogisms, word problems, sequences, calendar steps, classic traps."""
    rng = random.Random(f"{SEED}:reasoning")
    next_id = Numbered("reason")
    probes = _orderings(rng, next_id)
    for question, answer in SYLLOGISMS:
        wrong = tuple(o for o in YES_NO_UNKNOWN if o != answer)
        probes.append(choice_gold(next_id(), "reasoning", question, answer, wrong))
    probes += [numeric(next_id(), "reasoning", q, gold) for q, gold in _word_problems(rng)]
    probes += [numeric(next_id(), "reasoning", q, gold) for q, gold in _sequences(rng)]
    probes += _weekdays(rng, next_id)
    probes.append(
        numeric(
            next_id(),
            "reasoning",
            "A bat and a ball cost $1.10 in total. The bat costs $1.00 more than the ball. "
            "How much does the ball cost, in dollars?",
            "0.05",
        )
    )
    probes.append(
        numeric(
            next_id(),
            "reasoning",
            "If 5 machines take 5 minutes to make 5 widgets, how many minutes would 100 machines "
            "take to make 100 widgets?",
            5,
        )
    )
    probes.append(
        choice_gold(
            next_id(),
            "reasoning",
            "Which is heavier: a kilogram of feathers or a kilogram of iron?",
            "They weigh the same",
            ("The iron", "The feathers"),
        )
    )
    probes += [free(next_id(), "reasoning", q) for q in REASONING_FREE]
    return probes


def _orderings(rng: random.Random, next_id: Numbered) -> list[Probe]:
    relations = (
        ("taller", "tallest", "shortest"),
        ("older", "oldest", "youngest"),
        ("faster", "fastest", "slowest"),
    )
    probes = []
    for index in range(8):
        first, middle, last = rng.sample(NAMES, 3)  # first > middle > last
        comparative, top, bottom = relations[index % len(relations)]
        facts = [
            f"{first} is {comparative} than {middle}.",
            f"{middle} is {comparative} than {last}.",
        ]
        rng.shuffle(facts)
        asks_top = index % 2 == 0
        question = f"{' '.join(facts)} Who is the {top if asks_top else bottom}?"
        answer = first if asks_top else last
        others = tuple(n for n in (first, middle, last) if n != answer)
        probes.append(choice_gold(next_id(), "reasoning", question, answer, others))
    return probes


def _word_problems(rng: random.Random) -> list[tuple[str, int]]:
    n1, n2, n3 = rng.sample(NAMES, 3)
    a, b = rng.randint(3, 20), rng.randint(2, 15)
    c, d = rng.randint(20, 60), rng.randint(2, 19)
    per_box, boxes = rng.randint(6, 12), rng.randint(3, 9)
    share, children = rng.randint(3, 9), rng.randint(2, 8)
    speed, hours = 10 * rng.randint(4, 12), rng.randint(2, 5)
    age, years = rng.randint(7, 40), rng.randint(3, 25)
    price, percent = 10 * rng.randint(2, 12), rng.choice((10, 20, 50))
    birds, away, arrive = rng.randint(10, 30), rng.randint(2, 9), rng.randint(2, 9)
    return [
        (f"{n1} has {a} apples and buys {b} more. How many apples does {n1} have now?", a + b),
        (f"{n2} had {c} stickers and gave {d} to a friend. How many stickers are left?", c - d),
        (f"A box holds {per_box} pencils. How many pencils are in {boxes} boxes?", per_box * boxes),
        (
            f"{share * children} cookies are shared equally among {children} children. "
            "How many cookies does each child get?",
            share,
        ),
        (
            f"A train travels at {speed} km per hour for {hours} hours. "
            "How many kilometres does it travel?",
            speed * hours,
        ),
        (f"{n3} is {age} years old. How old will {n3} be in {years} years?", age + years),
        (
            f"A shirt costs {price} dollars and is on sale for {percent}% off. "
            "What is the sale price in dollars?",
            price * (100 - percent) // 100,
        ),
        (
            f"There are {birds} birds on a tree. {away} fly away and then {arrive} more arrive. "
            "How many birds are on the tree now?",
            birds - away + arrive,
        ),
    ]


def _sequences(rng: random.Random) -> list[tuple[str, int]]:
    items = []
    for _ in range(4):
        start, step = rng.randint(1, 20), rng.randint(2, 9)
        terms = [start + step * i for i in range(4)]
        items.append((_sequence_question(terms), start + step * 4))
    for _ in range(2):
        start, ratio = rng.randint(1, 5), rng.randint(2, 3)
        terms = [start * ratio**i for i in range(4)]
        items.append((_sequence_question(terms), start * ratio**4))
    return items


def _sequence_question(terms: list[int]) -> str:
    return f"What number comes next: {', '.join(map(str, terms))}, ...?"


def _weekdays(rng: random.Random, next_id: Numbered) -> list[Probe]:
    probes = []
    for _ in range(4):
        today, days = rng.randrange(7), rng.randint(2, 12)
        answer = WEEKDAYS[(today + days) % 7]
        wrong = tuple(rng.sample([d for d in WEEKDAYS if d != answer], 3))
        question = f"If today is {WEEKDAYS[today]}, what day of the week will it be in {days} days?"
        probes.append(choice_gold(next_id(), "reasoning", question, answer, wrong))
    return probes


# Python snippets whose printed output is an integer (numeric probes)
CODE_NUMERIC = (
    "x = 3\ny = x * 2 + 1\nprint(y)",
    'print(len("hello"))',
    "print(sum(range(5)))",
    "print(7 // 2)",
    "print(7 % 3)",
    "print(2 ** 5)",
    "xs = [1, 2, 3]\nxs.append(4)\nprint(len(xs))",
    "n = 0\nfor i in range(4):\n    n += i\nprint(n)",
    "print(max([3, 9, 2]))",
    'd = {"a": 1, "b": 2}\nprint(d["b"] * 10)',
    "print(len([x for x in range(10) if x % 2 == 0]))",
    'print("banana".count("a"))',
    "def f(n):\n    return n * n\n\nprint(f(f(2)))",
    'print(int("12") + 3)',
)
# Python snippets with distractors; the correct option is the snippet's real output
CODE_CHOICE = (
    ('print("ab" * 3)', ("ab3", "aabb", "An error")),
    ("print([1, 2, 3][-1])", ("1", "-1", "An error")),
    ('print("Hello"[1:3])', ("He", "ell", "Hel")),
    ("print(10 / 4)", ("2", "2.0", "3")),
    ('print(bool(""))', ("True", "None", "An error")),
    ("print(3 == 3.0)", ("False", "None", "An error")),
    ("print(sorted([3, 1, 2]))", ("[3, 1, 2]", "[3, 2, 1]", "None")),
    ("x = [1, 2]\ny = x\ny.append(3)\nprint(x)", ("[1, 2]", "[3]", "An error")),
    ('print("a,b,c".split(","))', ("['a,b,c']", "abc", "['a', ',', 'b', ',', 'c']")),
    ("print(type(5).__name__)", ("float", "str", "number")),
    ('print("5" + "3")', ("8", "5 3", "An error")),
    ("print(0.1 + 0.2 == 0.3)", ("True", "None", "An error")),
    ("print(list(range(1, 4)))", ("[1, 2, 3, 4]", "[0, 1, 2, 3]", "[4]")),
    ('print(" hi ".strip().upper())', ("hi", "hI", "Hi")),
    ("print(not (True and False))", ("False", "None", "An error")),
    ("print({1, 2, 2, 3})", ("{1, 2, 2, 3}", "[1, 2, 3]", "3")),
)
# snippets in other languages cannot be run here; their outputs are well known
CODE_FOREIGN = (
    ("JavaScript", 'console.log(1 + "2");', "12", ("3", "NaN", "An error")),
    ("JavaScript", "console.log(typeof null);", "object", ("null", "undefined", "number")),
    ("C", 'printf("%d", 5 / 2);', "2", ("2.5", "3", "2.0")),
)
CODE_FREE = (
    "In one sentence, what does this Python function do?\n"
    "```python\ndef f(xs):\n    return [x for x in xs if x > 0]\n```",
    "What is the best programming language for beginners? Answer in one sentence.",
    "Write a Python function that returns the square of a number.",
    "Tabs or spaces for indentation? Answer in one sentence.",
    "In one sentence, when does this function fail?\n"
    "```python\ndef average(xs):\n    return sum(xs) / len(xs)\n```",
)


def code() -> list[Probe]:
    """Code reading: what a snippet prints (numeric or choice), and opinions about code."""
    next_id = Numbered("code")
    question = "What does this Python code print?\n```python\n{}\n```"
    probes = [
        numeric(next_id(), "code", question.format(snippet), run_snippet(snippet))
        for snippet in CODE_NUMERIC
    ]
    for snippet, wrong in CODE_CHOICE:
        probes.append(
            choice_gold(next_id(), "code", question.format(snippet), run_snippet(snippet), wrong)
        )
    for language, snippet, output, wrong in CODE_FOREIGN:
        text = f"What does this {language} code print?\n```\n{snippet}\n```"
        probes.append(choice_gold(next_id(), "code", text, output, wrong))
    probes += [free(next_id(), "code", q) for q in CODE_FREE]
    return probes


def run_snippet(snippet: str) -> str:
    """What ``snippet`` prints, without the trailing newline (our own fixed snippets only)."""
    out = io.StringIO()
    namespace: dict[str, object] = {}
    with contextlib.redirect_stdout(out):
        exec(snippet, namespace)  # only the constant snippets above, never outside input
    return out.getvalue().rstrip("\n")
