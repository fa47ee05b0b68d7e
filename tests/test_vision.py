"""Pictures: read and checked (vision/images.py), sized to a budget, shown to the tiny Gemma 4
through the real libmtmd, asked about with `ask` and `chat`, taken from a camera stand-in.

The fixture has random weights: these tests check counts, the cache and the plumbing, never what
the model says about a picture.
"""

import io
import json
import struct
import zlib

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, edge_gemma
from conftest import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from edge.errors import ImageError
from edge.vision.images import IMAGE_TOKEN_BUDGETS, budget_size, decode_image, fit_to_budget, read_image

TINY = FIXTURES / "gemma4-tiny"
MODEL, MMPROJ = TINY / "tiny-gemma-4-E2B.gguf", TINY / "mmproj-tiny-gemma-4-E2B.gguf"
ALIGN = 48  # Gemma 4: 16-pixel patches pooled 3x3 into one image token


def photo(width=400, height=300, seed=1) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header says another size (a decompression bomb's trick), CRC fixed."""
    data = bytearray(encoded(photo(1, 1), "PNG"))
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


# -- reading and checking ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_each_format_decodes_to_rgb_at_its_size(fmt):
    picture = decode_image(encoded(photo(), fmt), name=f"x.{fmt.lower()}")
    assert picture.rgb.shape == (300, 400, 3) and picture.rgb.dtype == np.uint8


def test_a_phone_photo_is_turned_upright_and_transparency_lies_on_white():
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    upright = decode_image(encoded(photo(400, 300), "JPEG", exif=exif.tobytes()))
    assert (upright.width, upright.height) == (300, 400)
    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert (decode_image(encoded(clear, "PNG")).rgb == 255).all()


def test_bad_images_are_refused_with_what_to_do(tmp_path):
    whole = encoded(photo(), "PNG")
    cases = {
        "truncated or damaged": whole[: len(whole) // 2],
        "not an image": b"just some text, named .png",
        "absurd": png_claiming(100_000, 100_000),
        "not an image this can read; send PNG": encoded(photo(32, 32), "TIFF"),
        "empty": b"",
    }
    for fragment, data in cases.items():
        with pytest.raises(ImageError) as caught:
            decode_image(data, name="upload.png")
        assert fragment in str(caught.value), (fragment, str(caught.value))
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "missing.jpg")


def test_the_same_pixels_have_the_same_digest_and_others_another():
    a, b = decode_image(encoded(photo(), "PNG")), decode_image(encoded(photo(), "BMP"))
    assert a.digest == b.digest
    assert decode_image(encoded(photo(seed=2), "PNG")).digest != a.digest


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(1, 12_000),
    height=st.integers(1, 12_000),
    tokens=st.sampled_from(IMAGE_TOKEN_BUDGETS) | st.integers(1, 1120),
)
def test_a_budget_size_never_exceeds_the_budget_and_keeps_the_shape(width, height, tokens):
    w, h = budget_size(width, height, tokens, ALIGN)
    cols, rows = w // ALIGN, h // ALIGN
    assert w % ALIGN == 0 and h % ALIGN == 0 and cols >= 1 and rows >= 1
    assert cols * rows <= tokens
    # A picture that is not extreme uses most of its budget and keeps its aspect ratio.
    if max(width, height) / min(width, height) <= 4 and tokens >= 70:
        assert cols * rows >= 0.75 * tokens
        assert abs(np.log((w / h) / (width / height))) < 0.35


def test_a_large_photo_is_kept_small_enough_for_any_budget():
    from edge.vision.images import KEPT_PIXELS

    y, x = np.mgrid[0:4000, 0:6000]
    smooth = Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8))
    for fmt in ("JPEG", "PNG"):  # JPEG decodes at a reduced scale, PNG is shrunk after decoding
        kept = decode_image(encoded(smooth, fmt))
        assert kept.width * kept.height <= KEPT_PIXELS and abs(kept.width / kept.height - 1.5) < 0.01
        fitted = fit_to_budget(kept, 1120, ALIGN)  # the largest budget is still cut from it, not grown
        assert (fitted.width, fitted.height) == budget_size(6000, 4000, 1120, ALIGN)
        assert fitted.width <= kept.width and fitted.height <= kept.height


def test_fitting_shrinks_large_pictures_and_grows_small_ones():
    big = decode_image(encoded(photo(4000, 3000), "JPEG"))
    small = decode_image(encoded(photo(64, 48), "PNG"))
    for picture in (big, small):
        fitted = fit_to_budget(picture, 280, ALIGN)
        assert (fitted.width, fitted.height) == budget_size(picture.width, picture.height, 280, ALIGN)
        assert fit_to_budget(fitted, 280, ALIGN) is fitted  # already that size: untouched


# -- through the model -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(llama_cpp_available):
    from edge.model.engine import LoadedModel
    from edge.settings import RunSettings

    with LoadedModel(MODEL, RunSettings(n_ctx=4096, n_batch=256, n_ubatch=256, image_tokens=140)) as model:
        model.attach_projector(MMPROJ)
        yield model


def test_the_budget_sets_the_image_tokens_in_the_prompt(loaded):
    picture = decode_image(encoded(photo(640, 480), "PNG"))
    prompt = loaded.chat_prompt([{"role": "user", "content": loaded.projector.marker + "What is this?"}]).text
    counts = {}
    for budget in (70, 140, 280):
        fitted = loaded.fit_image(picture, budget)
        report = loaded.engine.prefill(prompt, [fitted], fresh=True)
        w, h = budget_size(640, 480, budget, ALIGN)
        assert report.media_tokens == (w // ALIGN) * (h // ALIGN) == loaded.projector.image_tokens(fitted)
        counts[budget] = report.prompt_tokens - report.media_tokens
    assert len(set(counts.values())) == 1  # the text around the picture is the same at every budget
    assert loaded.projector.image_tokens(loaded.fit_image(picture)) == 130  # the settings' 140: 13 x 10


def test_a_picture_already_in_the_cache_is_reused_whole_and_never_cut(loaded):
    from edge.model.conversation import Conversation

    engine = loaded.engine
    engine.reset()
    picture = loaded.fit_image(decode_image(encoded(photo(), "PNG")))
    conversation = Conversation(loaded)
    first = conversation.reply("What is this?", images=[picture])
    first.run()
    conversation.remember(first.text)
    tokens = loaded.projector.image_tokens(picture)
    assert first.prefill.media_tokens == tokens and first.prefill.encode_ms > 0
    follow_up = conversation.reply("And the colours?")
    follow_up.run()
    assert follow_up.prefill.reused > tokens and follow_up.prefill.encode_ms == 0  # found, not encoded again
    # A cache that ends inside the picture is rolled back to its start: the picture goes in whole.
    start = next(i for i, key in enumerate(engine.cached) if key < -1)
    engine.truncate(start + tokens // 2)
    again = conversation.reply("And the colours?")
    again.run()
    assert again.prefill.reused == start and again.prefill.encode_ms > 0


def test_the_context_budget_counts_pictures_and_drops_the_oldest_turns(loaded):
    from edge.model.conversation import Conversation
    from edge.model.engine import GREEDY

    conversation = Conversation(loaded)
    sampling, dropped = GREEDY.with_(max_tokens=4), 0
    for seed in range(9):  # 9 pictures of 540 tokens: more than the 4096-token context holds
        picture = loaded.fit_image(decode_image(encoded(photo(seed=seed), "PNG")), 560)
        reply = conversation.reply(f"Picture {seed}?", sampling, images=[picture])
        reply.run()
        conversation.remember(reply.text)
        assert reply.prefill.prompt_tokens + 4 <= loaded.n_ctx
        dropped += conversation.last_fit.dropped_turns
    kept = [m for m in conversation.history if "images" in m]
    assert 1 <= len(kept) < 9 and dropped == 9 - len(kept)
    assert kept[-1]["content"].endswith("Picture 8?")


def test_a_model_without_eyes_says_so(demo_gguf, llama_cpp_available):
    from edge.model.engine import LoadedModel
    from edge.settings import RunSettings

    with LoadedModel(demo_gguf, RunSettings(n_ctx=512)) as model:
        with pytest.raises(ImageError, match="cannot see"):
            model.fit_image(decode_image(encoded(photo(), "PNG")))


# -- the commands ------------------------------------------------------------------------------------

ARGS = ["-m", str(MODEL), "--mmproj", str(MMPROJ), "-c", "4096"]


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    for i, fmt in enumerate(("png", "jpeg")):
        photo(seed=i).save(folder / f"frame{i}.{fmt}")
    return folder


def test_ask_answers_about_pictures_and_reports_their_tokens(pictures, llama_cpp_available):
    one, two = sorted(pictures.iterdir())
    result = edge_gemma("ask", *ARGS, "-i", str(one), "-i", str(two), "--image-tokens", "70", "-n", "4", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    w, h = budget_size(400, 300, 70, ALIGN)
    each = (w // ALIGN) * (h // ALIGN)
    assert [i["image_tokens"] for i in report["images"]] == [each, each]
    assert report["image_tokens"] == 2 * each and report["audio_tokens"] == 0
    assert report["prompt_tokens"] > 2 * each and 0 < report["generated_tokens"] <= 4
    plain = edge_gemma("ask", *ARGS, "-i", str(one), "-n", "3", "What is this?")
    assert plain.returncode == 0, plain.stderr
    assert "image tokens" in plain.stderr and "tok/s" in plain.stderr


def test_ask_refuses_bad_pictures_before_loading_anything(tmp_path, pictures):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    cut = tmp_path / "cut.jpg"
    data = (pictures / "frame1.jpeg").read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(60_000, 60_000))
    assert_one_line_error(edge_gemma("ask", *ARGS, "-i", str(text)), "notes.png", "not an image")
    assert_one_line_error(edge_gemma("ask", *ARGS, "-i", str(cut)), "truncated")
    assert_one_line_error(edge_gemma("ask", *ARGS, "-i", str(bomb)), "absurd")
    bomb.write_bytes(png_claiming(10_000, 9_000))  # under Pillow's own refusal, over our 64 MP
    assert_one_line_error(edge_gemma("ask", *ARGS, "-i", str(bomb)), "10000x9000")
    assert_one_line_error(edge_gemma("ask", *ARGS, "-i", str(tmp_path / "gone.png")), "not found")
    assert_one_line_error(edge_gemma("ask", *ARGS, "What?"), "--image")
    assert_one_line_error(edge_gemma("ask", *ARGS, "--camera", str(tmp_path / "nothing")), "no camera")
    assert_one_line_error(edge_gemma("ask", *ARGS, "-i", str(pictures / "frame0.png"), "--image-tokens", "5000"))
    # The voice loop's camera is checked before its model loads, and the tool needs one.
    gone = str(tmp_path / "no-camera")
    assert_one_line_error(edge_gemma("voice", *ARGS, "--camera", gone, "--tts", "none"), "no camera")
    assert_one_line_error(edge_gemma("voice", *ARGS, "--tools", "camera", "--tts", "none"), "--camera")


def test_ask_takes_a_frame_from_a_camera_stand_in(tmp_path, pictures, llama_cpp_available):
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(5):
        writer.write(np.full((240, 320, 3), 40 * i, dtype=np.uint8))
    writer.release()
    for source in (video, pictures):
        result = edge_gemma("ask", *ARGS, "--camera", str(source), "-n", "3", "--json", "What am I holding?")
        assert result.returncode == 0, result.stderr
        (seen,) = json.loads(result.stdout)["images"]
        assert seen["image_tokens"] == 130  # generic profile's 140 tokens, a 4:3 frame: 13 x 10


def test_camera_stand_ins_give_frames_in_order(tmp_path):
    from edge.vision.camera import open_camera

    with pytest.raises(ImageError, match="no camera"):
        with open_camera(str(tmp_path / "nothing")):
            pass
    for i in range(2):
        Image.fromarray(np.full((30, 40, 3), 100 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    with open_camera(str(tmp_path)) as camera:
        assert [camera.capture().rgb[0, 0, 0] for _ in range(3)] == [0, 100, 0]  # in name order, then again


def test_chat_shows_a_picture_with_the_next_message_and_keeps_it_cached(pictures, llama_cpp_available):
    script = f"/image {pictures / 'frame0.png'}\n/image {pictures / 'missing.png'}\nWhat is it?\nAnd now?\n"
    result = edge_gemma("chat", *ARGS, "-n", "3", input_text=script)
    assert result.returncode == 0, result.stderr
    assert "picture 1 attached: 130 image tokens" in result.stderr
    assert "error: image file not found" in result.stderr
    stats = [line for line in result.stderr.splitlines() if line.startswith("[prompt")]
    assert len(stats) == 2 and "cached" in stats[1]
    cached = int(stats[1].split("(")[1].split()[0])
    assert cached > 130  # the follow-up found the picture in the KV cache


def test_bench_measures_a_picture_at_each_budget(llama_cpp_available):
    result = edge_gemma("bench", "-m", str(MODEL), "--mmproj", str(MMPROJ), "--pictures", "70,280", "-r", "2", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["pictures"]
    assert [r["budget"] for r in rows] == [70, 280]
    for r in rows:
        w, h = budget_size(640, 480, r["budget"], ALIGN)
        assert (r["width"], r["height"]) == (w, h) and r["image_tokens"] == (w // ALIGN) * (h // ALIGN)
        assert r["encode_s"] > 0 and r["prefill_s"] > 0 and r["prompt_tokens"] > r["image_tokens"]
    assert_one_line_error(edge_gemma("bench", "-m", str(MODEL), "--mmproj", str(MMPROJ), "--pictures", "9000"))
    assert_one_line_error(edge_gemma("bench", "-m", "demo", "--pictures", "70"), "mmproj")
