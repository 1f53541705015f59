"""Instruction-following items: short questions x constraints that code can check.

Written for this project. Each constraint is (kind, argument, instruction text); the checker for
each kind lives in evals/suites/metrics.py.
"""

QUESTIONS = [
    "What is your favourite season and why?",
    "Describe the ocean.",
    "What makes a good friend?",
    "Why do people enjoy music?",
    "Describe a city at night.",
    "What is the purpose of a library?",
    "How do plants grow?",
    "What should someone pack for a beach trip?",
    "Why is sleep important?",
    "Describe a thunderstorm.",
    "What is a good way to learn a new language?",
    "Why do leaves change colour in autumn?",
    "Describe your ideal breakfast.",
    "What is the role of a teacher?",
    "How does a bicycle work?",
    "Why do cats purr?",
    "Describe a mountain landscape.",
    "What makes a story interesting?",
    "How should someone prepare for a job interview?",
    "Why is exercise good for health?",
    "Describe the taste of lemonade.",
    "What is the best thing about weekends?",
    "Why do we have holidays?",
    "How do birds find their way when migrating?",
    "Describe a busy market.",
]

CONSTRAINTS = [
    ("all_caps", None, "Write your whole answer in capital letters."),
    ("all_lower", None, "Write your whole answer in lowercase letters only."),
    ("exact_words", 3, "Answer using exactly 3 words."),
    ("exact_words", 5, "Answer using exactly 5 words."),
    ("max_words", 10, "Answer in at most 10 words."),
    ("start_with", "Yes", "Begin your answer with the word 'Yes'."),
    ("include_word", "blue", "Use the word 'blue' somewhere in your answer."),
    ("no_commas", None, "Do not use any commas in your answer."),
    ("end_with", "done", "End your answer with the word 'done'."),
    ("one_word", None, "Answer with a single word."),
]
