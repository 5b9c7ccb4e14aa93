"""Class names and their order: index i of a model output means ``names[i]``.

FER2013 numbers its labels 0-6 in the order below; FER+ votes come in a different
column order, so `FERPLUS_COLUMNS` maps them onto the same names. The class list
a model was trained with travels with it inside the bundle, so the device shows
whatever classes the model has (e.g. six from an image-folder dataset).
"""

from __future__ import annotations

FER2013_CLASSES: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
    "neutral",
)

#: FER+ (fer2013new.csv) emotion vote columns, in file order, and our name for each.
FERPLUS_COLUMNS: dict[str, str] = {
    "neutral": "neutral",
    "happiness": "happy",
    "surprise": "surprise",
    "sadness": "sad",
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "contempt": "contempt",
}

#: FER+ 8-class order: FER2013's seven, then contempt, so 7-class models stay a prefix.
FERPLUS8_CLASSES: tuple[str, ...] = FER2013_CLASSES + ("contempt",)

#: Short display names used by the device overlay.
#: The label a face gets when its top probability is below ``fer-device run --min-emotion-confidence``.
UNCERTAIN = "uncertain"
DISPLAY = {name: name.capitalize() for name in (*FERPLUS8_CLASSES, UNCERTAIN)}


def validate_classes(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return `names` as a tuple after checking it is a usable class list.

    A class list must have at least two distinct, non-empty names; duplicates
    would make an output index ambiguous.
    """
    names = tuple(str(n).strip() for n in names)
    if len(names) < 2:
        raise ValueError(f"a class list needs at least 2 names, got {list(names)}")
    if any(not n for n in names):
        raise ValueError(f"class names must be non-empty, got {list(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {list(names)}")
    return names
