"""Caption post-processing on crafted model answers: boilerplate stripping and broken-caption detection."""

import pytest

from curate.stages.caption.text import caption_problem, clean_caption, repetition, shorten


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("The video shows a man riding a bicycle down a hill.", "A man riding a bicycle down a hill."),
        ("This clip depicts two dogs playing in the snow.", "Two dogs playing in the snow."),
        ("In this video, we see a chef slicing onions.", "A chef slicing onions."),
        ("In the video a red car drives past.", "A red car drives past."),
        ("Sure! Here is a caption for the video: The video features a cat.", "A cat."),
        ("Certainly. A woman sings on a stage.", "A woman sings on a stage."),
        ("Assistant: A boat crosses a lake.", "A boat crosses a lake."),
        ('Caption: "A boat crosses a lake."', "A boat crosses a lake."),
        ("  A   boat\n\ncrosses\ta lake.  ", "A boat crosses a lake."),
        ("This is a video of a timelapse of clouds.", "A timelapse of clouds."),
        ("These frames show a beach at sunset.", "A beach at sunset."),
        ("we see a bird on a branch.", "A bird on a branch."),
    ],
)
def test_boilerplate_is_stripped_and_whitespace_collapsed(raw, clean):
    assert clean_caption(raw) == clean


@pytest.mark.parametrize(
    "kept",
    [
        "A man walks. The video then cuts to a dog.",  # only the opening is rewritten
        "The clip, shot at night, shows a bridge.",  # no formula at the start: left alone
        'A sign reads "open" above the door.',  # quotes inside the caption stay
        "Videos of cats are popular; here a cat naps.",
    ],
)
def test_captions_without_boilerplate_are_unchanged(kept):
    assert clean_caption(kept) == kept


@pytest.mark.parametrize(
    "looping",
    [
        "A man a man a man a man walks.",
        "A dog runs and the dog runs and the dog runs and the dog runs.",
        "The car drives down the road. The car drives down the road.",
        "City with the walk across through with the walk across through with the walk",
        "Snow falls!!!!!!!!!!!",
        "at................",
        "the the the the",
        " ".join(["red blue green"] * 2 + ["yellow"] + ["red", "blue"] * 14),
    ],
)
def test_repetition_loops_are_detected(looping):
    assert repetition(looping) is not None
    assert caption_problem(looping, finished=True).startswith(("repetition loop", "empty"))


@pytest.mark.parametrize(
    "fine",
    [
        "A woman in a very very old coat walks along a beach at sunset.",
        "Two people sit at a table. One of them pours coffee into two cups.",
        "Step by step, a potter shapes the clay on a spinning wheel.",
        "The year 2000000 appears on the screen in white numbers.",  # digits may repeat
        "A long pan across a city: buildings, streets, cars, trees, a river, a bridge, boats and people.",
    ],
)
def test_ordinary_captions_pass(fine):
    assert repetition(fine) is None
    assert caption_problem(fine, finished=True) is None


def test_empty_short_and_truncated_captions():
    assert caption_problem("", finished=True) == "empty"
    assert caption_problem("A dog", finished=True) == "empty (2 words)"
    assert caption_problem("A dog", finished=True, min_words=2) is None
    assert caption_problem("A man walks along a road and then", finished=False).startswith("truncated")
    # A loop is the more useful diagnosis when both apply.
    assert caption_problem("a man a man a man a man a man", finished=False).startswith("repetition loop")


def test_shorten_cuts_at_a_word_with_an_ellipsis():
    assert shorten("a dog\n  running", 50) == "a dog running"
    assert shorten("a dog running on the beach", 14) == "a dog running…"
    assert shorten("a dog running on the beach", 20) == "a dog running on…"  # "the" would not fit with the ellipsis
    assert shorten("x" * 40, 16) == "x" * 15 + "…"  # one long word is cut inside it
    assert len(shorten("word " * 3000, 300)) <= 300
