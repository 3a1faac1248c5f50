"""A small corpus written for the RAG tests, with questions whose answering document is known.

Topics are distinct (so recall measures retrieval, not luck); the questions paraphrase their
document instead of quoting it, so a keyword match alone does not find them. The error-code
documents are near-duplicates that differ in their codes: only exact matching tells them apart."""

from __future__ import annotations

DOCS: dict[str, str] = {
    "backups": "# Backups\n\nThe database is copied to object storage every night at 02:00 UTC. Copies are kept for "
    "35 days. To restore, an operator picks a copy in the console and the service is read-only until the restore ends.",
    "vacation": "# Holidays and leave\n\nEmployees get 28 days of paid leave a year. Requests go to the team lead at least "
    "two weeks ahead; unused days expire at the end of March of the following year.",
    "onboarding": "# First week\n\nNew engineers receive a laptop on day one, pair with a mentor for two weeks and ship a "
    "small change to production before Friday.",
    "oncall": "# On-call rotation\n\nEach engineer is on call one week in six. The pager must be answered within 15 minutes; "
    "incidents are reviewed in a blameless postmortem the week after.",
    "security": "# Passwords and keys\n\nPasswords are at least 14 characters and rotate yearly. SSH keys are ed25519 and are "
    "registered in the identity portal; lost laptops are reported to the security desk at once.",
    "expenses": "# Travel costs\n\nTrain tickets, hotels up to 150 euros a night and meals are reimbursed. Receipts are "
    "uploaded within 30 days through the finance app.",
    "deploys": "# Shipping code\n\nEvery merge to main is built, tested and rolled out to canary servers; after 20 minutes "
    "without alerts it reaches the whole fleet. Deploys are frozen on Fridays after 15:00.",
    "kitchen": "# Office kitchen\n\nCoffee beans are refilled on Mondays. Dishes go into the dishwasher, which runs at 18:00; "
    "the fridge is emptied every Friday afternoon.",
    "gpu": "# GPU cluster\n\nTraining jobs are queued with the scheduler and run on eight-card nodes. A job may hold at most "
    "four nodes; jobs idle for an hour are stopped.",
    "parking": "# Parking\n\nThe garage has 40 spaces, booked in the facilities app a day ahead. Electric cars charge on "
    "level -1; bicycles are kept in the courtyard.",
    "err-4471": "# Error ERR-4471\n\nThe tenant's storage quota is exceeded and new uploads are refused until files are "
    "deleted or the quota is raised.",
    "err-4417": "# Error ERR-4417\n\nThe tenant's storage quota is almost exhausted and a warning is shown with every upload "
    "until files are deleted or the quota is raised.",
    "err-7144": "# Error ERR-7144\n\nThe tenant's storage quota could not be read and uploads are retried until the quota "
    "service answers again.",
    "err-1447": "# Error ERR-1447\n\nThe tenant's storage quota was raised and uploads that were refused earlier may be "
    "sent again.",
}

#: question -> the document that answers it (paraphrased, few shared words).
QUESTIONS: dict[str, str] = {
    "How long do we keep nightly database copies?": "backups",
    "How many days off do staff get per year?": "vacation",
    "What happens during a new hire's first days?": "onboarding",
    "How quickly must someone respond when paged?": "oncall",
    "What kind of SSH key should I use?": "security",
    "Can I get my hotel bill paid back after a business trip?": "expenses",
    "When do changes reach all production machines?": "deploys",
    "When is the dishwasher started?": "kitchen",
    "How many machines can one training job use?": "gpu",
    "Where can I charge my electric car at work?": "parking",
}

#: exact-keyword queries: the code alone names the document.
CODES: dict[str, str] = {"ERR-4471": "err-4471", "ERR-4417": "err-4417", "ERR-7144": "err-7144", "ERR-1447": "err-1447"}
