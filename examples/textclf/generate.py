"""Regenerate the example support tickets (seeded, so the files in data/ do not change).

    python examples/textclf/generate.py

tickets.csv is a first extract of labelled support tickets (billing, shipping, technical);
more.csv a later batch written in a different register (longer messages, with order numbers
and a polite sign-off), so its text statistics move away from the first extract's: what the
drift monitor in project.py is there to notice.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).parent / "data"

TOPICS = {
    "billing": [
        "I was charged twice for my {plan} subscription",
        "my invoice shows the wrong amount",
        "please refund the payment from last {day}",
        "why did my card get billed again",
        "the discount code was not applied to my bill",
        "I want to change the credit card on file",
        "cancel my {plan} plan and stop the charges",
        "the receipt for my last payment is missing",
    ],
    "shipping": [
        "my parcel has not arrived since {day}",
        "the tracking number does not work",
        "the package was delivered to the wrong address",
        "can you ship the order faster",
        "the courier left the box outside in the rain",
        "my delivery is late by a week",
        "I need to change the shipping address of my order",
        "the box arrived damaged and half empty",
    ],
    "technical": [
        "the app crashes when I open settings",
        "I cannot log in after the {day} update",
        "the password reset email never comes",
        "the website shows an error on checkout",
        "sync stopped working on my {device}",
        "the screen stays blank after start",
        "notifications do not appear on my {device}",
        "the export button does nothing",
    ],
}
OPENINGS = ["", "hi, ", "hello, ", "urgent: ", "help! ", "good morning, "]
ENDINGS = ["", ".", "!", " please help", " asap", " thanks"]
FILLERS = {
    "plan": ["premium", "basic", "family", "yearly"],
    "day": ["monday", "friday", "week", "month"],
    "device": ["phone", "tablet", "laptop", "watch"],
}


def ticket(rng: random.Random, topic: str, verbose: bool) -> str:
    text = rng.choice(TOPICS[topic]).format(**{k: rng.choice(v) for k, v in FILLERS.items()})
    text = rng.choice(OPENINGS) + text + rng.choice(ENDINGS)
    if verbose:
        order = rng.randint(100000, 999999)
        text += f". My order number is {order} and I have already written twice about this"
        text += rng.choice([". Kind regards", ". Thank you in advance", ". Best wishes"])
    return text


def rows(rng: random.Random, start: int, count: int, verbose: bool) -> list[dict[str, object]]:
    topics = sorted(TOPICS)
    out = []
    for i in range(start, start + count):
        topic = rng.choice(topics)
        out.append({"ticket_id": i, "text": ticket(rng, topic, verbose), "label": topic})
    return out


def write(path: Path, data: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(data[0]))
        writer.writeheader()
        writer.writerows(data)


def main() -> None:
    rng = random.Random(11)
    HERE.mkdir(exist_ok=True)
    write(HERE / "tickets.csv", rows(rng, 1, 600, verbose=False))
    write(HERE / "more.csv", rows(rng, 601, 200, verbose=True))


if __name__ == "__main__":
    main()
