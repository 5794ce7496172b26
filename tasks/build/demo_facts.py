"""Facts tables for the offline demo's closed-domain spoken QA (written for this project).

Each row: country, capital, currency, language. Answers are short sentences that contain the fact,
so accuracy can be scored the paper's way (reference answer contained in the response).
"""

COUNTRIES: list[tuple[str, str, str, str]] = [
    ("France", "Paris", "euro", "French"),
    ("Germany", "Berlin", "euro", "German"),
    ("Italy", "Rome", "euro", "Italian"),
    ("Spain", "Madrid", "euro", "Spanish"),
    ("Portugal", "Lisbon", "euro", "Portuguese"),
    ("Japan", "Tokyo", "yen", "Japanese"),
    ("China", "Beijing", "yuan", "Chinese"),
    ("India", "New Delhi", "rupee", "Hindi"),
    ("Russia", "Moscow", "ruble", "Russian"),
    ("Egypt", "Cairo", "pound", "Arabic"),
    ("Kenya", "Nairobi", "shilling", "Swahili"),
    ("Brazil", "Brasilia", "real", "Portuguese"),
    ("Argentina", "Buenos Aires", "peso", "Spanish"),
    ("Mexico", "Mexico City", "peso", "Spanish"),
    ("Canada", "Ottawa", "dollar", "English"),
    ("Australia", "Canberra", "dollar", "English"),
    ("Norway", "Oslo", "krone", "Norwegian"),
    ("Sweden", "Stockholm", "krona", "Swedish"),
    ("Poland", "Warsaw", "zloty", "Polish"),
    ("Greece", "Athens", "euro", "Greek"),
    ("Turkey", "Ankara", "lira", "Turkish"),
    ("Peru", "Lima", "sol", "Spanish"),
    ("Chile", "Santiago", "peso", "Spanish"),
    ("Thailand", "Bangkok", "baht", "Thai"),
    ("Vietnam", "Hanoi", "dong", "Vietnamese"),
    ("Ireland", "Dublin", "euro", "English"),
    ("Austria", "Vienna", "euro", "German"),
    ("Hungary", "Budapest", "forint", "Hungarian"),
    ("Morocco", "Rabat", "dirham", "Arabic"),
    ("Nigeria", "Abuja", "naira", "English"),
]

QUESTIONS: dict[str, list[str]] = {
    "capital": ["What is the capital of {country}?", "Which city is the capital of {country}?",
                "Can you tell me the capital of {country}?"],
    "currency": ["What currency is used in {country}?", "What is the currency of {country}?"],
    "language": ["What language do people speak in {country}?", "What is the main language of {country}?"],
}
FOLLOW_UPS: dict[str, str] = {
    "capital": "And what is its capital?",
    "currency": "And what money do they use there?",
    "language": "And which language do they speak there?",
}
ANSWERS: dict[str, str] = {
    "capital": "The capital of {country} is {capital}.",
    "currency": "The currency of {country} is the {currency}.",
    "language": "People in {country} mainly speak {language}.",
}

# Sentences for the assistant's TTS corpus: the facts' words in many contexts, so the TTS LM hears
# each entity often and in varied positions (not only in the three answer templates).
CORPUS_TEMPLATES: list[str] = [
    "The capital of {country} is {capital}.",
    "The currency of {country} is the {currency}.",
    "People in {country} mainly speak {language}.",
    "{capital} is the capital of {country}.",
    "In {country}, people pay with the {currency}.",
    "{language} is the main language of {country}.",
    "I took a train from {capital} to {other_capital}.",
    "{country} and {other_country} are on my travel list.",
    "You can pay with the {currency} in {country}.",
    "My friend in {capital} speaks {language} at home.",
    "Is {capital} bigger than {other_capital}?",
    "The {currency} and the {other_currency} are both currencies.",
    "She learned {language} before moving to {capital}.",
    "We visited {country}, then {other_country}, and then {capital}.",
    "Next year I will study {other_language} and {language}.",
    "Yes, {capital} is a beautiful city in {country}.",
]
