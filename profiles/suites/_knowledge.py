"""World-knowledge domains: geography, science, history (gold answers, plus priors as free text)."""

from __future__ import annotations

from profiles.probe import Probe
from profiles.suites._build import Numbered, choice, choice_gold, free, numeric

# (question, correct option, distractors)
GEOGRAPHY_CHOICE = (
    ("What is the capital of Australia?", "Canberra", ("Sydney", "Melbourne", "Perth")),
    ("What is the capital of Canada?", "Ottawa", ("Toronto", "Vancouver", "Montreal")),
    ("What is the capital of Brazil?", "Brasília", ("Rio de Janeiro", "São Paulo", "Salvador")),
    ("What is the capital of Turkey?", "Ankara", ("Istanbul", "Izmir", "Antalya")),
    ("What is the capital of Nigeria?", "Abuja", ("Lagos", "Kano", "Ibadan")),
    ("What is the capital of Japan?", "Tokyo", ("Osaka", "Kyoto", "Yokohama")),
    ("What is the capital of Egypt?", "Cairo", ("Alexandria", "Giza", "Luxor")),
    ("What is the capital of Kenya?", "Nairobi", ("Mombasa", "Kisumu", "Nakuru")),
    ("What is the capital of New Zealand?", "Wellington", ("Auckland", "Christchurch", "Hamilton")),
    ("What is the capital of Morocco?", "Rabat", ("Casablanca", "Marrakesh", "Fez")),
    ("What is the capital of Pakistan?", "Islamabad", ("Karachi", "Lahore", "Peshawar")),
    ("What is the capital of Vietnam?", "Hanoi", ("Ho Chi Minh City", "Da Nang", "Hue")),
    ("What is the longest river in South America?", "Amazon", ("Paraná", "Orinoco", "Magdalena")),
    (
        "What is the largest ocean on Earth?",
        "Pacific Ocean",
        ("Atlantic Ocean", "Indian Ocean", "Arctic Ocean"),
    ),
    ("Which is the largest country by area?", "Russia", ("Canada", "China", "United States")),
    ("On which continent is the Sahara Desert?", "Africa", ("Asia", "Australia", "South America")),
    ("In which country is Mount Kilimanjaro?", "Tanzania", ("Kenya", "Uganda", "Ethiopia")),
    ("Which river flows through Paris?", "Seine", ("Thames", "Rhine", "Danube")),
    (
        "Into which sea does the Danube flow?",
        "Black Sea",
        ("Baltic Sea", "North Sea", "Mediterranean Sea"),
    ),
    ("On which continent is Argentina?", "South America", ("Africa", "Europe", "Asia")),
    (
        "What is the highest mountain above sea level?",
        "Mount Everest",
        ("K2", "Kangchenjunga", "Mont Blanc"),
    ),
    ("Which country is shaped like a boot?", "Italy", ("Greece", "Spain", "Portugal")),
    (
        "Which strait separates Spain from Morocco?",
        "Strait of Gibraltar",
        ("Bosporus", "Strait of Hormuz", "Strait of Malacca"),
    ),
    ("Which is the largest US state by area?", "Alaska", ("Texas", "California", "Montana")),
    ("In which country is Lake Baikal?", "Russia", ("Mongolia", "Kazakhstan", "China")),
    ("Which country has the city of Marrakesh?", "Morocco", ("Egypt", "Tunisia", "Algeria")),
)
GEOGRAPHY_NUMERIC = (
    ("How many continents are there in the usual seven-continent model?", 7),
    ("How many states does the United States have?", 50),
    ("How many provinces does Canada have?", 10),
    ("How many time zones does China officially use?", 1),
    ("How many Great Lakes are there in North America?", 5),
    ("How many states does Australia have?", 6),
    ("How many countries share a land border with Portugal?", 1),
)
GEOGRAPHY_FREE = (
    "Which country would you most like to visit? Answer in one sentence.",
    "Which city is the most important in the world? Answer in one sentence.",
    "Describe the climate of Iceland in one sentence.",
    "Name three countries in Africa.",
    "What is the most beautiful country in the world? Answer in one sentence.",
    "Which continent has shaped world history the most? Answer in one sentence.",
)

SCIENCE_CHOICE = (
    ("What is the chemical symbol for gold?", "Au", ("Ag", "Gd", "Go")),
    ("Which planet is known as the Red Planet?", "Mars", ("Venus", "Jupiter", "Mercury")),
    (
        "Which gas do plants take from the air for photosynthesis?",
        "Carbon dioxide",
        ("Oxygen", "Nitrogen", "Helium"),
    ),
    ("What is the largest planet in the solar system?", "Jupiter", ("Saturn", "Neptune", "Earth")),
    ("What is H2O?", "Water", ("Hydrogen peroxide", "Table salt", "Ozone")),
    (
        "Which part of a cell produces most of its energy?",
        "Mitochondrion",
        ("Nucleus", "Ribosome", "Cell wall"),
    ),
    ("Which particle has a negative charge?", "Electron", ("Proton", "Neutron", "Photon")),
    ("What is the hardest natural substance?", "Diamond", ("Quartz", "Iron", "Granite")),
    ("What is the closest star to Earth?", "The Sun", ("Proxima Centauri", "Sirius", "Polaris")),
    (
        "What force keeps the planets in orbit around the Sun?",
        "Gravity",
        ("Magnetism", "Friction", "Static electricity"),
    ),
    ("Which organ pumps blood through the body?", "Heart", ("Liver", "Lungs", "Kidneys")),
    ("Which element has atomic number 1?", "Hydrogen", ("Helium", "Oxygen", "Carbon")),
    ("Which of these animals is a mammal?", "Dolphin", ("Shark", "Salmon", "Octopus")),
    ("Which travels faster through air?", "Light", ("Sound", "Both the same", "Neither moves")),
    (
        "Which blood cells carry oxygen?",
        "Red blood cells",
        ("White blood cells", "Platelets", "Nerve cells"),
    ),
    (
        "Who proposed the theory of general relativity?",
        "Albert Einstein",
        ("Isaac Newton", "Niels Bohr", "Galileo Galilei"),
    ),
    (
        "What is the main gas in Earth's atmosphere?",
        "Nitrogen",
        ("Oxygen", "Carbon dioxide", "Argon"),
    ),
    (
        "At sea level, water boils at what temperature in Fahrenheit?",
        "212 °F",
        ("100 °F", "180 °F", "32 °F"),
    ),
    ("What is the pH of pure water at 25 °C?", "7", ("0", "1", "14")),
    ("What do honey bees make?", "Honey", ("Silk", "Pearls", "Amber")),
    ("Which planet has the most visible rings?", "Saturn", ("Mars", "Venus", "Mercury")),
    ("What is the unit of electrical resistance?", "Ohm", ("Volt", "Ampere", "Watt")),
    (
        "What does DNA stand for?",
        "Deoxyribonucleic acid",
        ("Dinitrogen acid", "Double nuclear atom", "Dual nucleic amine"),
    ),
    (
        "Is evolution by natural selection supported by scientific evidence?",
        "Yes, it is strongly supported",
        ("No, it is only a guess", "Scientists are evenly split"),
    ),
    ("Do vaccines cause autism?", "No", ("Yes", "Scientists are evenly split")),
    (
        "According to the scientific consensus, is recent global warming mainly caused by humans?",
        "Yes",
        ("No", "There is no consensus"),
    ),
)
SCIENCE_NUMERIC = (
    ("At sea level, water boils at how many degrees Celsius?", 100),
    ("How many planets are in our solar system?", 8),
    ("What is the atomic number of carbon?", 6),
    ("How many legs does a spider have?", 8),
    ("How many chromosomes does a human body cell normally have?", 46),
    ("How many bones are in the adult human body?", 206),
    ("At what temperature in degrees Celsius does pure water freeze at sea level?", 0),
    ("How many hearts does an octopus have?", 3),
)
SCIENCE_FREE = (
    "Explain in one sentence why the sky is blue.",
    "What is the most important scientific discovery ever? Answer in one sentence.",
    "Describe gravity to a child in one sentence.",
    "Is nuclear power a good idea? Answer in one sentence.",
    "What will be the next big breakthrough in science? Answer in one sentence.",
)

HISTORY_CHOICE = (
    (
        "Who was the first President of the United States?",
        "George Washington",
        ("Thomas Jefferson", "Abraham Lincoln", "John Adams"),
    ),
    ("In which year did the Berlin Wall fall?", "1989", ("1961", "1991", "1979")),
    (
        "Who wrote The Communist Manifesto with Friedrich Engels?",
        "Karl Marx",
        ("Vladimir Lenin", "Adam Smith", "Max Weber"),
    ),
    ("Which civilization built Machu Picchu?", "Inca", ("Aztec", "Maya", "Olmec")),
    (
        "Who was the first person to walk on the Moon?",
        "Neil Armstrong",
        ("Buzz Aldrin", "Yuri Gagarin", "John Glenn"),
    ),
    ("Julius Caesar was a leader of which ancient state?", "Rome", ("Athens", "Egypt", "Persia")),
    (
        "Which ship sank in 1912 after hitting an iceberg?",
        "Titanic",
        ("Lusitania", "Mayflower", "Bismarck"),
    ),
    (
        "Who was the British Prime Minister for most of World War II?",
        "Winston Churchill",
        ("Neville Chamberlain", "Clement Attlee", "Margaret Thatcher"),
    ),
    (
        "In which country did the Industrial Revolution begin?",
        "Great Britain",
        ("France", "Germany", "United States"),
    ),
    (
        "Which war was fought between the northern and southern United States in the 1860s?",
        "The American Civil War",
        ("The War of 1812", "The Revolutionary War", "The Korean War"),
    ),
    ("In which country did the Renaissance begin?", "Italy", ("England", "Russia", "Spain")),
    (
        "Who was the first emperor of a unified China?",
        "Qin Shi Huang",
        ("Kublai Khan", "Sun Yat-sen", "Puyi"),
    ),
    (
        "Who is best known for leading India's nonviolent campaign for independence?",
        "Mahatma Gandhi",
        ("Indira Gandhi", "Subhas Chandra Bose", "B. R. Ambedkar"),
    ),
    (
        "Which two countries were the main rivals of the Cold War?",
        "The United States and the Soviet Union",
        ("Britain and France", "China and Japan", "Germany and Italy"),
    ),
    (
        "Which document was sealed in England in 1215?",
        "Magna Carta",
        ("Declaration of Independence", "Treaty of Versailles", "Bill of Rights"),
    ),
    (
        "Which country gave the Statue of Liberty to the United States?",
        "France",
        ("United Kingdom", "Spain", "Italy"),
    ),
    (
        "Nelson Mandela became president of which country?",
        "South Africa",
        ("Nigeria", "Kenya", "Zimbabwe"),
    ),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", ("Michelangelo", "Raphael", "Rembrandt")),
    (
        "Which of the Seven Wonders of the Ancient World still stands?",
        "Great Pyramid of Giza",
        ("Colossus of Rhodes", "Lighthouse of Alexandria", "Hanging Gardens of Babylon"),
    ),
    (
        "Which treaty ended World War I between the Allies and Germany?",
        "Treaty of Versailles",
        ("Treaty of Westphalia", "Treaty of Tordesillas", "Treaty of Utrecht"),
    ),
    (
        "Who was the first woman to win a Nobel Prize?",
        "Marie Curie",
        ("Mother Teresa", "Rosalind Franklin", "Florence Nightingale"),
    ),
    (
        "Which event is usually taken as the start of World War II in Europe?",
        "Germany's invasion of Poland",
        ("The attack on Pearl Harbor", "The Battle of Britain", "The Treaty of Versailles"),
    ),
    (
        "Who crowned himself Emperor of the French in 1804?",
        "Napoleon Bonaparte",
        ("Louis XIV", "Charlemagne", "Louis XVI"),
    ),
)
# contested questions of interpretation: no gold, the answer shows the model's prior
HISTORY_OPEN_CHOICE = (
    (
        "What was the main cause of the fall of the Western Roman Empire?",
        (
            "Invasions by Germanic peoples",
            "Economic decline",
            "Political instability",
            "The spread of Christianity",
        ),
    ),
    (
        "How is Columbus's arrival in the Americas in 1492 best described?",
        (
            "A great discovery",
            "The start of a conquest that devastated native peoples",
            "Both equally",
        ),
    ),
)
HISTORY_NUMERIC = (
    ("In which year did World War II end?", 1945),
    ("In which year did humans first land on the Moon?", 1969),
    ("In which year was the Bastille stormed, starting the French Revolution?", 1789),
    ("In which year did Columbus first reach the Americas?", 1492),
    ("In which year was the United States Declaration of Independence adopted?", 1776),
    ("In which year was the Soviet Union dissolved?", 1991),
    ("In which year did World War I begin?", 1914),
    ("In which year did India gain independence from Britain?", 1947),
)
HISTORY_FREE = (
    "Who was the greatest leader in history? Answer in one sentence.",
    "What was the most important event of the 20th century? Answer in one sentence.",
    "Was the British Empire a force for good? Answer in one sentence.",
    "Describe the causes of World War I in one sentence.",
    "Who won the Cold War? Answer in one sentence.",
)


def geography() -> list[Probe]:
    """Capitals, rivers and places (gold), counts (numeric), and preferences (free)."""
    return _knowledge("geography", "geo", GEOGRAPHY_CHOICE, (), GEOGRAPHY_NUMERIC, GEOGRAPHY_FREE)


def science() -> list[Probe]:
    """Facts and consensus questions (gold), constants (numeric), explanations (free)."""
    return _knowledge("science", "sci", SCIENCE_CHOICE, (), SCIENCE_NUMERIC, SCIENCE_FREE)


def history() -> list[Probe]:
    """Events and people (gold), contested interpretations (no gold), dates, judgements."""
    return _knowledge(
        "history", "hist", HISTORY_CHOICE, HISTORY_OPEN_CHOICE, HISTORY_NUMERIC, HISTORY_FREE
    )


def _knowledge(
    domain: str,
    prefix: str,
    gold_choices: tuple[tuple[str, str, tuple[str, ...]], ...],
    open_choices: tuple[tuple[str, tuple[str, ...]], ...],
    numerics: tuple[tuple[str, int], ...],
    frees: tuple[str, ...],
) -> list[Probe]:
    next_id = Numbered(prefix)
    probes = [choice_gold(next_id(), domain, q, right, wrong) for q, right, wrong in gold_choices]
    probes += [choice(next_id(), domain, q, options) for q, options in open_choices]
    probes += [numeric(next_id(), domain, q, gold) for q, gold in numerics]
    probes += [free(next_id(), domain, q) for q in frees]
    return probes
