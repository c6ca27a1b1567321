"""The moderation taxonomy: category names and what each means.

The names and their meanings follow OpenAI's moderation API, so that ``/v1/moderations`` answers with
the fields its clients expect. The definitions below are paraphrased in our own words. The detector
learns the categories from public data (``moderation/training.py``; how each data set's labels map onto
these categories: ``moderation/data/label_map.toml``).
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

# A sub-category is a special case of its parent: whatever is flagged for the child is flagged for the
# parent too (the detector raises the parent's score to the child's).
PARENTS: dict[str, str] = {
    "harassment/threatening": "harassment",
    "hate/threatening": "hate",
    "illicit/violent": "illicit",
    "self-harm/intent": "self-harm",
    "self-harm/instructions": "self-harm",
    "sexual/minors": "sexual",
    "violence/graphic": "violence",
}

DESCRIPTIONS: dict[str, str] = {
    "harassment": "Language that insults, demeans, bullies or torments a person or group.",
    "harassment/threatening": "Harassment that also threatens violence or serious harm to its target.",
    "hate": (
        "Content that expresses or promotes hatred of people for their race, ethnicity, nationality, "
        "religion, gender, sexual orientation, disability or caste."
    ),
    "hate/threatening": "Hateful content that also calls for or threatens violence against the group.",
    "illicit": "Advice or instructions for committing crimes or other illicit acts.",
    "illicit/violent": "Illicit advice that involves violence or obtaining or making weapons.",
    "self-harm": "Content that promotes, encourages or depicts suicide, cutting or eating disorders.",
    "self-harm/intent": "The speaker says they are harming themselves or intend to.",
    "self-harm/instructions": "Encouragement or instructions for how to harm or kill oneself.",
    "sexual": (
        "Content meant to arouse, such as descriptions of sexual activity, or offers of sexual services "
        "(sex education and health are not included)."
    ),
    "sexual/minors": "Sexual content that involves anyone under 18.",
    "violence": "Content that depicts, threatens or glorifies death, violence or physical injury.",
    "violence/graphic": "Death, violence or injury described in graphic, gory detail.",
}
