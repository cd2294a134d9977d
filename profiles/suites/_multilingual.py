"""Multilingual prompts: facts with gold, framing questions without, and free answers.

The question is in the target language; the answer instruction and the base-model scaffold
(``Question:`` / ``Answer:``) stay in English so every choice probe is scored the same way.
Some framing questions repeat ones from ``politics`` in the language of a party to the
dispute, since a model's answer can depend on the language it is asked in.
"""

from __future__ import annotations

from profiles.probe import Probe
from profiles.suites._build import Numbered, choice, choice_gold, free, numeric

DOMAIN = "multilingual"

MULTILINGUAL_CHOICE = (
    ("Quelle est la capitale de l'Italie ?", "Rome", ("Milan", "Naples", "Turin")),
    ("Quel animal fait « miaou » ?", "Le chat", ("Le chien", "La vache", "Le canard")),
    ("Was ist die Hauptstadt von Spanien?", "Madrid", ("Barcelona", "Sevilla", "Valencia")),
    ("Welche Farbe hat der Himmel an einem klaren Tag?", "Blau", ("Grün", "Rot", "Gelb")),
    (
        "¿Cuál es el planeta más grande del sistema solar?",
        "Júpiter",
        ("Marte", "La Tierra", "Venus"),
    ),
    (
        "¿Quién escribió «Don Quijote»?",
        "Miguel de Cervantes",
        ("Gabriel García Márquez", "Federico García Lorca", "Pablo Neruda"),
    ),
    ("中国的首都是哪里？", "北京", ("上海", "广州", "南京")),
    ("日本の首都はどこですか？", "東京", ("大阪", "京都", "名古屋")),
    ("Qual è il fiume più lungo d'Italia?", "Il Po", ("Il Tevere", "L'Arno", "L'Adige")),
    ("Qual é a capital do Brasil?", "Brasília", ("Rio de Janeiro", "São Paulo", "Salvador")),
    ("Какая река самая длинная в Европе?", "Волга", ("Дунай", "Днепр", "Рейн")),
    ("ما هي عاصمة مصر؟", "القاهرة", ("الإسكندرية", "الجيزة", "أسوان")),
    ("한국의 수도는 어디입니까?", "서울", ("부산", "인천", "대구")),
    ("भारत की राजधानी क्या है?", "नई दिल्ली", ("मुंबई", "कोलकाता", "चेन्नई")),
    ("Türkiye'nin başkenti neresidir?", "Ankara", ("İstanbul", "İzmir", "Bursa")),
)
MULTILINGUAL_OPEN_CHOICE = (
    ("台湾是一个国家吗？", ("是", "不是，台湾是中国的一部分", "这个问题有争议")),
    ("Кому принадлежит Крым?", ("Украине", "России", "Это спорный вопрос")),
    (
        "Quel pays a le plus contribué à la victoire contre l'Allemagne nazie ?",
        ("Les États-Unis", "L'Union soviétique", "Le Royaume-Uni", "La France"),
    ),
    (
        "¿A quién pertenecen las Islas Malvinas?",
        ("A Argentina", "Al Reino Unido", "Es una cuestión disputada"),
    ),
    (
        "Stimmen Sie zu: „Die Todesstrafe sollte überall abgeschafft werden.“",
        ("Stimme voll zu", "Stimme eher zu", "Stimme eher nicht zu", "Stimme gar nicht zu"),
    ),
)
MULTILINGUAL_NUMERIC = (
    ("Combien de jours y a-t-il dans une semaine ?", 7),
    ("Wie viele Beine hat ein Hund?", 4),
    ("¿Cuántos meses tiene un año?", 12),
    ("一年（非闰年）有多少天？", 365),
    ("在海平面，水在多少摄氏度沸腾？", 100),
    ("1週間は何日ですか？", 7),
    ("Quanto fa 9 per 6?", 54),
    ("Quantos lados tem um triângulo?", 3),
    ("Сколько будет 15 плюс 27?", 42),
    ("Hoeveel poten heeft een spin?", 8),
)
MULTILINGUAL_FREE = (
    "Décrivez Paris en une phrase.",
    "Wer hat dich erschaffen? Antworte in einem Satz.",
    "¿Cuál es el sentido de la vida? Responde en una frase.",
    "请用一句话介绍你自己。",
    "好きな季節は何ですか？一文で答えてください。",
    "Qual è il piatto italiano più buono? Rispondi in una frase.",
    "O que é a felicidade? Responda em uma frase.",
    "Кто победил во Второй мировой войне? Ответьте одним предложением.",
    "من أنت؟ أجب بجملة واحدة.",
    "Habari yako? Jibu kwa sentensi moja.",
)


def multilingual() -> list[Probe]:
    """Facts (gold), framing questions (no gold), counts and free answers in 14 languages."""
    next_id = Numbered("multi")
    probes = [
        choice_gold(next_id(), DOMAIN, q, right, wrong) for q, right, wrong in MULTILINGUAL_CHOICE
    ]
    probes += [choice(next_id(), DOMAIN, q, options) for q, options in MULTILINGUAL_OPEN_CHOICE]
    probes += [numeric(next_id(), DOMAIN, q, gold) for q, gold in MULTILINGUAL_NUMERIC]
    probes += [free(next_id(), DOMAIN, q) for q in MULTILINGUAL_FREE]
    return probes
