"""A tiny SmolVLM2-family video captioner, built from config with no download (`caption.model=tiny`).

The default captioner is `HuggingFaceTB/SmolVLM2-256M-Video-Instruct` (`SmolVLMForConditionalGeneration`
with `SmolVLMProcessor`). Machines that test this project cannot reach the hub, so
`build_tiny_smolvlm` assembles the same classes with a random model of a few hundred thousand
parameters and a processor whose tokenizer is trained here, from a fixed English text, in
milliseconds. Everything the captioning stage does with the real model (chat template with a
video, frame expansion into image tokens, batched `generate` with left padding, decoding) runs on
it offline.

A random model writes random tokens, so its generation config (which the stage's settings only
override where they name a value) keeps its captions readable and finite: only whole-word tokens
and a little punctuation may be generated (`suppress_tokens`), and the end-of-utterance token is
pushed up after a dozen tokens (`exponential_decay_length_penalty`). The words still mean
nothing, and greedy decoding of a random model often loops, which exercises the retry path.

It goes through the same wrapper as any real model (`curate.models.vlm.Captioner`).
"""

from __future__ import annotations

import re

import torch

# The strings SmolVLMProcessor and its prompt expansion look for in the tokenizer; the ids of
# <image> and <end_of_utterance> also go into the model and generation configs.
IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
END_OF_UTTERANCE = "<end_of_utterance>"
BOS_TOKEN = "<|im_start|>"
PAD_TOKEN = "<|im_end|>"
UNK_TOKEN = "<unk>"
# Row/column markers appear only when an image is split into tiles. The tiny processor never splits
# (videos never do), but a 4x4 grid keeps `processor(images=...)` usable if tiling is switched on.
_GRID = 4
ROW_COL_TOKENS = [f"<row_{r}_col_{c}>" for r in range(1, _GRID + 1) for c in range(1, _GRID + 1)]
SPECIAL_TOKENS = [
    UNK_TOKEN, BOS_TOKEN, PAD_TOKEN, END_OF_UTTERANCE, IMAGE_TOKEN, VIDEO_TOKEN,
    FAKE_IMAGE_TOKEN, GLOBAL_IMAGE_TOKEN, *ROW_COL_TOKENS,
]  # fmt: skip

# Vision tower: 64x64 frames in 16-pixel patches give a 4x4 grid; the connector's pixel shuffle
# (scale 2) folds it to 2x2, so each frame costs 4 <image> tokens (plus 3 wrapper tokens).
TINY_IMAGE_SIZE = 64
TINY_PATCH_SIZE = 16
TINY_SCALE_FACTOR = 2
TINY_IMAGE_SEQ_LEN = (TINY_IMAGE_SIZE // TINY_PATCH_SIZE) ** 2 // TINY_SCALE_FACTOR**2
TINY_VOCAB_SIZE = 512  # 256 byte symbols + merges + the special tokens above
TINY_CAPTION_TOKENS = 12  # after this many new tokens, ending the caption becomes ever more likely
TINY_NUM_FRAMES = 8  # the processor's default when asked to sample; our callers pass frames
TINY_FPS = 1.0

# The message layout SmolVLM2 was trained on ("<|im_start|>User: <video>prompt<end_of_utterance>\n
# Assistant:"; no space after "User:" only when the message opens with an image), rendering what
# transformers' built-in SmolVLM video template renders. SmolVLMProcessor substitutes that built-in
# template whenever a message holds a video and no template is passed, so `Captioner.inputs`
# passes the processor's own template explicitly.
CHAT_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}"
    "{{ ':' if message['content'][0]['type'] == 'image' else ': ' }}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'video' %}{{ '<video>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Training text for the tiny tokenizer: a few hundred words in the register of video captions, so
# that common caption words become single tokens. Any other text still encodes (byte-level BPE).
CAPTION_TEXT = """
A person walks along a sandy beach at sunset while waves roll onto the shore. The camera follows
a red car driving down a winding mountain road surrounded by tall green trees. A small dog runs
across a grassy park and jumps to catch a yellow ball thrown by a child. Two people sit at a wooden
table in a busy cafe, talking and drinking coffee from white cups. A drone shot shows a city skyline
at night with bright lights reflecting on a calm river. A chef slices fresh vegetables on a cutting
board in a modern kitchen, then tosses them into a hot pan. Snow falls gently on a quiet street lined
with old houses and parked cars. A cyclist rides through a forest trail, the camera mounted on the
handlebars. A close up of a hand writing in a notebook with a blue pen. A crowd cheers at an outdoor
concert as colorful lights flash above the stage. A cat sleeps on a windowsill in warm afternoon
light. The video shows a timelapse of clouds moving over a green valley. A woman in a black jacket
opens a door and steps into a bright room. A man plays an acoustic guitar on a bench in a city
square while people walk past. Water flows over rocks in a clear stream under a blue sky. A boat
sails across the open sea, leaving a white wake behind it. Children play football on a dusty field
in the late evening. A slow pan across a desk with a laptop, a lamp and a stack of books. Birds fly
over a lake surrounded by mountains covered in snow. A train moves through the countryside past
fields of yellow flowers. Describe this video in detail. What is happening in this clip? Write a
short caption for the video. The scene is indoors. The scene is outdoors. The camera is static.
The camera moves slowly to the left. The camera zooms in on the face of a smiling man. There is
text on the screen. The lighting is dark and the image is blurry. The clip is a cartoon animation
with bright colors and simple shapes.
"""


def build_tiny_tokenizer():
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `CAPTION_TEXT`, with SmolVLM's special tokens.

    Byte-level so any caption or prompt encodes and decodes back exactly (no unknown words);
    trained, not hand-written, so token ids stay small and text splits like a real tokenizer's.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,  # ids 0..len-1, stable whatever the corpus
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CAPTION_TEXT.split("\n"), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=END_OF_UTTERANCE,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        # Decoding must not clean up spaces: the byte-level decoder already restores them.
        clean_up_tokenization_spaces=False,
    )


def build_tiny_processor(image_size: int = TINY_IMAGE_SIZE, image_seq_len: int = TINY_IMAGE_SEQ_LEN):
    """A SmolVLMProcessor with the local tokenizer and no tiling: frames become `image_size`
    squares of `image_seq_len` tokens (defaults: the tiny model's; benchmarks pass SmolVLM2's)."""
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    edge = {"longest_edge": image_size}
    # `size` and `max_image_size` both at the vision tower's input: the video processor resizes to
    # `size`, then squashes every frame to a max_image_size square (frames are never tiled).
    image_processor = SmolVLMImageProcessor(size=edge, max_image_size=edge, do_image_splitting=False)
    video_processor = SmolVLMVideoProcessor(size=edge, max_image_size=edge, num_frames=TINY_NUM_FRAMES, fps=TINY_FPS)
    return SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=build_tiny_tokenizer(),
        video_processor=video_processor,
        image_seq_len=image_seq_len,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_config(tokenizer):
    """SmolVLMConfig for a two-layer Llama text model behind a one-layer 64-pixel vision tower."""
    from transformers import SmolVLMConfig

    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in
           [("image", IMAGE_TOKEN), ("bos", BOS_TOKEN), ("eos", END_OF_UTTERANCE), ("pad", PAD_TOKEN)]}  # fmt: skip
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": TINY_IMAGE_SIZE,
        "patch_size": TINY_PATCH_SIZE,
    }
    text = {
        "model_type": "llama",
        "vocab_size": len(tokenizer),  # includes the special tokens
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["pad"],
    }
    return SmolVLMConfig(
        vision_config=vision,
        text_config=text,
        scale_factor=TINY_SCALE_FACTOR,
        image_token_id=ids["image"],
        pad_token_id=ids["pad"],
    )


def build_tiny_smolvlm(seed: int = 0):
    """(model, processor): a random SmolVLMForConditionalGeneration in eval mode and its processor.

    Seeded in a forked RNG, so the same seed gives the same weights without disturbing the
    caller's random state. Nothing is downloaded.
    """
    from transformers import SmolVLMForConditionalGeneration

    processor = build_tiny_processor()
    config = tiny_config(processor.tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmolVLMForConditionalGeneration(config)
    # Generation stops at <end_of_utterance> and pads with <|im_end|>, as the real model does.
    generation = model.generation_config
    generation.bos_token_id = config.text_config.bos_token_id
    generation.eos_token_id = config.text_config.eos_token_id
    generation.pad_token_id = config.text_config.pad_token_id
    generation.suppress_tokens = _non_word_tokens(processor.tokenizer)
    generation.exponential_decay_length_penalty = (TINY_CAPTION_TOKENS, 1.5)
    return model.eval(), processor


def _non_word_tokens(tokenizer) -> list[int]:
    """Every token id except whole words of the training text (with their leading space), '.', ','
    and the end of the utterance: what the tiny model may not write."""
    words = set(re.findall(r"[a-z]+", CAPTION_TEXT.lower()))
    eos = tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)
    allowed = {eos} | {i for token, i in tokenizer.get_vocab().items() if _is_word(token, words)}
    return sorted(set(range(len(tokenizer))) - allowed)


def _is_word(token: str, words: set[str]) -> bool:
    # Byte-level BPE writes a leading space as "Ġ".
    return token in (".", ",") or (token.startswith("Ġ") and token[1:].lower() in words)
