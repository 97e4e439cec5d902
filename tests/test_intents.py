"""bot.intents: what a message asks of the user's image, by rules (phrasing table both ways)."""

from __future__ import annotations

import pytest

from bot.intents import Intent, detect
from engine.runtime.control import CONTROL_TYPES

POSE = Intent(control=("openpose",))
STYLE = Intent(reference="style")
SUBJECT = Intent(reference="subject")
CANNY, DEPTH, LINEART, SCRIBBLE = (Intent(control=(t,)) for t in ("canny", "depth", "lineart", "scribble"))

POSITIVE = [
    # control: openpose
    ("same pose as this", POSE),
    ("Same pose as this!", POSE),
    ("use this pose", POSE),
    ("Use this pose, a robot dancing", POSE),
    ("a robot dancing, same pose as the attached image", POSE),
    ("copy her pose", POSE),
    ("keep the pose but make him a knight", POSE),
    ("mirror the pose in the picture", POSE),
    ("follow the pose from my photo", POSE),
    ("this dancer's pose, but as a robot", POSE),
    ("a cat posed like this", POSE),
    ("SAME   POSE...   as THIS", POSE),
    ("same pose as this \u2014 a robot", POSE),
    ("the exact same pose", POSE),
    ("match the stance of this photo", POSE),
    # control: other types
    ("keep the same composition", CANNY),
    ("same edges please", CANNY),
    ("use the edges of this image", CANNY),
    ("match the composition of the attached image", CANNY),
    ("same depth", DEPTH),
    ("same layout as my photo", DEPTH),
    ("use the lineart from this", LINEART),
    ("keep the line art", LINEART),
    ("same soft edges as this", Intent(control=("softedge",))),
    ("turn this sketch into a castle", SCRIBBLE),
    ("this doodle as a monster", SCRIBBLE),
    ("color my sketch", SCRIBBLE),
    ("same pose and composition as this", Intent(control=("openpose", "canny"))),
    ("same pose, same depth and same lines as this", Intent(control=("openpose", "depth", "lineart"))),
    # reference
    ("in the style of this image", STYLE),
    ("In the style of the attached image, a harbor", STYLE),
    ("in this style", STYLE),
    ("in the same style as my photo", STYLE),
    ("copy the art style of this", STYLE),
    ("styled like this", STYLE),
    ("use the colors from this picture", STYLE),
    ("give it this vibe", STYLE),
    ("in the style of this sketch", STYLE),  # the sketch is the reference, not a scribble control
    ("like this character, but as a knight", SUBJECT),
    ("use this character", SUBJECT),
    ("the character from my image as a pirate", SUBJECT),
    ("draw this person as a knight", SUBJECT),
    ("put my face on an astronaut", SUBJECT),
    ("put this product on a beach", SUBJECT),
    ("same outfit as in the photo", SUBJECT),
    # combinations
    ("Same pose & style as this!!", Intent(control=("openpose",), reference="style")),
    ("use the pose from this but in the style of that", Intent(control=("openpose",), reference="style")),
    # outpaint: all
    ("zoom out", Intent(outpaint="all")),
    ("Zoom out please", Intent(outpaint="all")),
    ("can you zoom out a bit?", Intent(outpaint="all")),
    ("zoom-out", Intent(outpaint="all")),
    ("zoom out 1.5x", Intent(outpaint="all", outpaint_factor=1.5)),
    ("zoom out 1.5 \u00d7", Intent(outpaint="all", outpaint_factor=1.5)),
    ("Zoom out 3 times please.", Intent(outpaint="all", outpaint_factor=3.0)),
    ("zoom out twice", Intent(outpaint="all", outpaint_factor=2.0)),
    ("zoom out by 50%", Intent(outpaint="all", outpaint_factor=1.5)),
    ("zoom-out, 2.5x", Intent(outpaint="all", outpaint_factor=2.5)),
    ("zoom out 10x", Intent(outpaint="all", outpaint_factor=10.0)),  # the tool rejects it clearly
    ("uncrop this", Intent(outpaint="all")),
    ("pull back the camera", Intent(outpaint="all")),
    ("extend the canvas", Intent(outpaint="all")),
    ("widen the shot", Intent(outpaint="all")),
    ("show more of the background", Intent(outpaint="all")),
    ("outpaint", Intent(outpaint="all")),
    # outpaint: one side
    ("extend to the right", Intent(outpaint="right")),
    ("Extend it to the LEFT.", Intent(outpaint="left")),
    ("pan left", Intent(outpaint="left")),
    ("Pan the camera up a bit", Intent(outpaint="up")),
    ("extend upward", Intent(outpaint="up")),
    ("extend the image downwards", Intent(outpaint="down")),
    ("expand the image to the right", Intent(outpaint="right")),
    ("outpaint to the bottom", Intent(outpaint="down")),
    ("add more space on the left", Intent(outpaint="left")),
    ("more sky at the top", Intent(outpaint="up")),
    ("make it wider on the right?", Intent(outpaint="right")),
    ("continue the scene to the right, 1.5x", Intent(outpaint="right", outpaint_factor=1.5)),
    ("same pose as this and zoom out", Intent(control=("openpose",), outpaint="all")),
]

NEGATIVE = [
    "a pose of a cat",
    "a cat in a yoga pose at sunset",
    "a dramatic pose, cinematic lighting",
    "pose: standing, arms crossed",
    "a ballerina posing on stage",
    "a knight in a heroic stance",
    "a man with a wide stance",
    "the composition should be centered, rule of thirds",
    "sharp edges, high contrast",
    "line art of a fox",
    "clean lines, minimal",
    "a sketch of a cat",
    "a doodle of a house",
    "depth of field, bokeh",
    "shallow depth of field in this shot",
    "isometric layout of a city",
    "match the composition of a renaissance painting",
    "in the style of Van Gogh",
    "copy the style of Monet",
    "a watercolor style painting of a harbor",
    "style: anime",
    "this is my favorite style",
    "a moody look, dark colors",
    "make it look like this",
    "a character sheet for a game",
    "a subject centered in frame",
    "the face of an old man",
    "a creature from the deep sea",
    "a zoomed out view of a city",
    "zoom in on the eyes",
    "don't zoom out, just make it darker",
    "not the same pose",
    "without keeping the pose",
    "a road extending to the horizon",
    "a person looking to the left",
    "arrows pointing up and down",
    "left and right hands",
    "a river flowing down the mountain",
    "a frying pan on the left",
    "a wider road on the left",
    "this is a cat",
    "a picture of this city at night",
    "make this darker",
    "same but with a hat",
    "same as before but blue",
    "keep it simple",
    "",
    "   ",
    "!!!",
]


@pytest.mark.parametrize(("text", "expected"), POSITIVE)
def test_detects_requests_about_the_image(text, expected):
    assert detect(text) == expected


@pytest.mark.parametrize("text", NEGATIVE)
def test_ordinary_prompts_have_no_intent(text):
    assert detect(text) is None


def test_tool_defaults():
    intent = detect("same pose as this, in the style of my photo, zoom out 1.5x")
    assert intent == Intent(control=("openpose",), reference="style", outpaint="all", outpaint_factor=1.5)
    assert intent.tool_defaults() == {
        "control": ["openpose"],
        "reference": "style",
        "outpaint": "all",
        "outpaint_factor": 1.5,
    }
    assert Intent(outpaint="right").tool_defaults() == {"outpaint": "right"}


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("same pose as this, a robot dancing", "a robot dancing"),
        ("Use this pose: a Knight", "a Knight"),
        ("a castle on a hill in the style of this image", "a castle on a hill"),
        ("in the style of this image, a castle", "a castle"),
        ("keep the pose but make him a knight", "make him a knight"),
        ("Zoom out 1.5x, show the whole Lighthouse", "show the whole Lighthouse"),
        ("same pose and composition as this. A robot, 3.5 meters tall", "A robot, 3.5 meters tall"),
        ("zoom out", "zoom out"),  # nothing else: the message itself (the tool reuses the source prompt)
        ('same pose as this, a "quoted" robot', 'a "quoted" robot'),
    ],
)
def test_the_prompt_is_the_message_without_the_request(text, prompt):
    assert detect(text).prompt == prompt


def test_at_most_three_controls_in_order_of_mention():
    intent = detect("same lines, same depth, same edges and same pose as this")
    assert intent.control == ("lineart", "depth", "canny")
    assert set(intent.control) <= set(CONTROL_TYPES)


def test_first_outpaint_request_wins_and_directional_beats_all_at_same_place():
    assert detect("extend to the left, then zoom out").outpaint == "left"
    assert detect("outpaint left").outpaint == "left"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"control": ("pose",)},
        {"control": ("canny", "canny")},
        {"control": ("canny", "depth", "openpose", "lineart")},
        {"reference": "look"},
        {"outpaint": "sideways"},
        {"outpaint_factor": 2.0},
        {"outpaint": "all", "outpaint_factor": 0.0},
    ],
)
def test_intent_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        Intent(**kwargs)


def test_empty_intent_is_falsy_and_long_text_is_bounded():
    assert not Intent()
    assert detect("same pose, " * 5000) == POSE
    assert detect("a" * 50000 + " zoom out") is None  # only the first 2000 characters are read
