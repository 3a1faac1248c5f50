"""Writes prompts.jsonl: labelled prompts (``{"text", "task"}``) made from the templates below, to
train the example Classifier (``python -m router.learned train prompts.jsonl --name tasks``).
Deterministic: the same file every run. A real fleet trains on its own export (the judge's
sampled questions labelled by people, or any labelled prompts)."""

from __future__ import annotations

import json
import random
import sys

SUBJECTS = ["a CSV file", "the user table", "a JSON config", "an HTTP request", "the log lines", "a date string", "a binary tree",
            "the shopping cart", "a list of orders", "the cache", "an email address", "a URL", "the sensor readings"]  # fmt: skip
LANGS = ["Python", "JavaScript", "TypeScript", "Go", "Rust", "Java", "SQL", "Bash", "C++", "Kotlin"]
TOPICS = ["the weather this weekend", "a good book to read", "planning a trip to Lisbon", "how to stay focused", "my new job",
          "learning to cook", "a birthday gift for my sister", "the history of the Roman empire", "why the sky is blue",
          "training for a marathon", "adopting a cat", "moving to another city", "a movie for tonight"]  # fmt: skip
DOCS = ["the meeting notes below", "this article", "the following support ticket", "this email thread", "the quarterly report",
        "the incident postmortem", "this research abstract", "the customer reviews below", "the product spec"]  # fmt: skip
FIELDS = ["names and dates", "the invoice number and total", "every email address", "the product names and prices",
          "the order id and status", "all phone numbers", "the author, title and year", "the error codes"]  # fmt: skip
NUMBERS = [(12, 7), (144, 12), (3.5, 2), (1024, 64), (17, 5), (250, 40), (9, 81), (365, 24)]

TEMPLATES = {
    "code": [
        "Write a {lang} function that parses {subject}.", "How do I read {subject} in {lang}?",
        "Fix this bug in my {lang} code:\n```\ndef load(path):\n    return open(path).read(\n```",
        "Refactor this {lang} class so it is easier to test.", "Why does my {lang} program throw a null pointer exception?",
        "Implement a function in {lang} that validates {subject}.",
        "Write a unit test in {lang} for the code that handles {subject}.",
        "Convert this loop to a list comprehension: for x in items: out.append(x * 2)",
        "What is the time complexity of sorting {subject} with quicksort? Show the {lang} code.",
        "Write a SQL query that joins orders and customers and returns the top 10 by revenue.",
        "Explain this stack trace from my {lang} service: TypeError: cannot read property 'id' of undefined",
        "import pandas as pd\ndf = pd.read_csv('x.csv')\nHow do I group {subject} by month?",
        "Write a regex that matches {subject}.", "function sum(a, b) {{ return a - b; }} what is wrong here?",
        "Generate a {lang} script that downloads {subject} and retries on failure.",
    ],
    "math": [
        "Solve the equation {a}x + {b} = 0.", "What is {a} times {b}?", "Calculate the integral of x^2 from 0 to {b}.",
        "What is the probability of rolling two sixes with two dice?", "Compute {a} divided by {b} and round to two decimals.",
        "Prove that the square root of 2 is irrational.", "Find the derivative of sin(x) * x^{b}.",
        "If a train travels {a} km in {b} hours, what is its average speed?", "{a} + {b} * 3 = ?",
        "What is the sum of the first {a} natural numbers?",
        "Calculate the compound interest on {a} dollars at {b}% for 3 years.",
        "Solve for x: x^2 - {b}x + {a} = 0", "What is {a}% of {b}?",
    ],
    "summarization": [
        "Summarize {doc} in three bullet points.", "Give me a short summary of {doc}.", "TL;DR of {doc}, please.",
        "Condense {doc} into one paragraph.", "What are the key points of {doc}?", "In short, what does {doc} say?",
        "Write an executive summary of {doc} for a busy manager.", "Summarise {doc} in two sentences.",
        "Can you give me the gist of {doc}?", "Shorten {doc} to fifty words, keeping what matters.",
    ],
    "extraction": [
        "Extract {fields} from {doc}.", "List all {fields} mentioned in {doc} as JSON.", "Pull out {fields} from {doc}.",
        "Parse {doc} and return {fields} as a JSON object.", "From {doc}, extract the named entities.",
        "Return {fields} found in {doc} as a table.", "Find {fields} in {doc} and output them as JSON fields.",
        "Which {fields} appear in {doc}? Output JSON only.",
    ],
    "chat": [
        "Can you tell me about {topic}?", "I need some advice on {topic}.", "What do you think about {topic}?",
        "Hi! Let's talk about {topic}.", "Any tips for {topic}?", "Tell me a fun fact about {topic}.",
        "I'm feeling unsure about {topic}. What should I do?", "Write a short poem about {topic}.",
        "How would you describe {topic} to a child?", "Recommend something related to {topic}.",
        "Thanks for your help yesterday! Now, about {topic}...", "Help me write a friendly message about {topic}.",
    ],
}


def prompts(seed: int = 3) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for task, templates in TEMPLATES.items():
        for template in templates:
            for _ in range(8):
                a, b = rng.choice(NUMBERS)
                text = template.format(lang=rng.choice(LANGS), subject=rng.choice(SUBJECTS), topic=rng.choice(TOPICS),
                                       doc=rng.choice(DOCS), fields=rng.choice(FIELDS), a=a, b=b)  # fmt: skip
                out.append({"text": text, "task": task})
    unique = list({p["text"]: p for p in out}.values())
    rng.shuffle(unique)
    return unique


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "deploy/examples/classifier/prompts.jsonl"
    with open(target, "w", encoding="utf-8") as handle:
        for item in prompts():
            handle.write(json.dumps(item) + "\n")
