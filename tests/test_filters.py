"""Per-answer filters: each returns a stable reason code or None."""

from __future__ import annotations

import pytest

from engine import filters
from engine.filters import Deduper
from engine.types import OutputSpec

SPEC = OutputSpec(kind="news headline", min_words=3, max_words=6)
PASSAGE = (
    "The central bank raised its benchmark interest rate by half a percentage point on Wednesday, "
    "the largest increase in two decades, as policymakers fought to bring inflation under control."
)


@pytest.mark.parametrize("text", ["", "   ", "\n\t", '""', "...", "** --"])
def test_empty_flags_text_without_letters_or_digits(text):
    assert filters.empty(text) == "empty"


@pytest.mark.parametrize("text", ["a", "42", "Stocks fall"])
def test_empty_passes_real_text(text):
    assert filters.empty(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that request.",
        "I’m sorry, but I cannot create content about violence.",
        "As an AI language model, I do not write news.",
        "I cannot fulfill this request.",
        "I can't assist with rewriting this passage.",
        "I am unable to provide that.",
        "I apologize, but this goes against my guidelines.",
        "Sorry, but I won't do that.",
        "I must decline to write this headline.",
        "  As a language model I avoid politics.",
        "The passage provides no information about a sports-related event, so no news summary can be generated based on it.",
        "The provided text does not mention any sports team or match.",
        "This passage is not about technology, so a summary cannot be written.",
    ],
)
def test_refusal_catches_common_refusals(text):
    assert filters.refusal(text) == "refusal"


@pytest.mark.parametrize(
    "text",
    [
        "Central bank lifts rates by half a point",
        "Unfortunately, I found the hotel staff rude and the room dirty.",
        "I cannot believe how good this pasta was!",
        "I can't recommend this phone enough: the battery lasts two days.",
        "Minister says sorry for delayed pension payments",
        "The text of the treaty contains no provision for troop withdrawals, diplomats said on Tuesday.",
        "Passage of the budget bill has no precedent this late in the year, Senate leaders said.",
        "Officials said the cause of the crash could not be determined until the recorders are found.",
    ],
)
def test_refusal_leaves_ordinary_text_alone(text):
    assert filters.refusal(text) is None


def test_word_bounds_are_inclusive():
    assert filters.too_short("one two", SPEC) == "too_short"
    assert filters.too_short("one two three", SPEC) is None
    assert filters.too_long("one two three four five six", SPEC) is None
    assert filters.too_long("one two three four five six seven", SPEC) == "too_long"


def test_truncated_only_on_length_finish():
    assert filters.truncated("length") == "truncated"
    assert filters.truncated("stop") is None


def test_copy_rate_of_full_partial_and_no_copy():
    copied = "raised its benchmark interest rate by half a percentage point"
    assert filters.copy_rate(copied, PASSAGE) == 1.0
    assert filters.copy_rate("Bank hikes rates to tame prices", PASSAGE) == 0.0
    partial = "Analysts note the largest increase in two decades, as policymakers fought back hard today"
    rate = filters.copy_rate(partial, PASSAGE)
    assert rate == pytest.approx(9 / 14)  # a 9-token run copied out of 14 tokens


def test_copy_rate_ignores_case_and_punctuation_and_handles_short_text():
    assert filters.copy_rate("THE CENTRAL BANK RAISED ITS BENCHMARK, INTEREST-RATE!", PASSAGE) == 1.0
    assert filters.copy_rate("central bank", PASSAGE) == 1.0  # shorter than n: the whole text must occur
    assert filters.copy_rate("bank central", PASSAGE) == 0.0
    assert filters.copy_rate("", PASSAGE) == 0.0


def test_copy_of_passage_uses_the_threshold_and_ignores_tiny_texts():
    assert filters.copy_of_passage("the largest increase in two decades as policymakers fought", PASSAGE) == "copy_of_passage"
    mostly_new = "Rates jump sharply again: the largest increase in two decades as policymakers fought"  # 9/13
    assert filters.copy_of_passage(mostly_new, PASSAGE) is None
    assert filters.copy_of_passage(mostly_new, PASSAGE, threshold=0.5) == "copy_of_passage"
    assert filters.copy_of_passage("Rates jump: the largest increase in two decades", PASSAGE, threshold=0.1) is None  # 6-gram < 8
    assert filters.copy_of_passage("central bank", PASSAGE) is None


def test_normalize_folds_case_accents_punctuation_and_space():
    assert filters.normalize("  Café  SOCIETY: “Opens”!  ") == "cafe society opens"


def test_deduper_flags_exact_duplicates_after_normalisation():
    dedup = Deduper()
    assert dedup.check("Stocks fall on rate fears", "Business") is None
    assert dedup.check("  stocks FALL on rate fears!", "Business") == "duplicate"
    assert dedup.check("stocks fall on rate fears", "Sports") == "duplicate"  # across labels too
    assert dedup.check("Stocks fall on war fears", "Business") is None
    assert len(dedup) == 2


def test_deduper_per_label_and_existing_examples():
    dedup = Deduper([("Old example text", "A")], per_label=True)
    assert dedup.check("old example text", "A") == "duplicate"
    assert dedup.check("old example text", "B") is None
    assert dedup.check("old example text", "B") == "duplicate"


def test_an_answer_that_talks_about_its_passage_is_not_an_example():
    # real rewrites from a synthesizrr run on the news mix (2026-12-06)
    for text in ("The passage discusses the evolution of baseball fields, highlighting the shift to newer designs.",
                 "A man expresses his support, based on the passage's content about world politics.",
                 "In a recent Science and Technology News summary, the passage describes the film _The Andromeda Strain_.",
                 "The given text says that oil prices rose.",
                 # IMDb rewrites that retell a review instead of being one (2026-12-07)
                 "The film review expresses a positive opinion of the film. The writer believes that the ability",
                 "The reviewer finds the film to be well-paced and engaging, with a strong focus on character.",
                 "I regret to inform you that you've selected an unadmirable film. The reviewer expresses strong dislike"):
        assert filters.mentions_passage(text) == "mentions_passage", text
    for text in ("The passage of the tax bill was delayed by the Senate.",  # news language, not a meta-reference
                 "Ships waited for passage through the Strait of Hormuz.",
                 "Officials said the text of the treaty would be published on Monday.",
                 # a human review may quarrel with another one or talk about the screenwriter
                 "I read the review in the paper and the critic missed the point entirely.",
                 "The writer and director both deserve credit for the pacing.",
                 "The author of the novel would have hated what they did to the ending."):
        assert filters.mentions_passage(text) is None, text


LOOPED = ("This movie is an absolute disaster. It is not only incredibly poorly acted and poorly directed, but it "
          "also destroys a reasonable book. I am disappointed in this movie and I will not watch it again. "
          + "I am an 11-year-old boy who has never seen this movie again. " * 9)  # Qwen 1.5B, IMDb run 2026-12-06


def test_an_answer_caught_in_a_decoding_loop_is_repetitive_and_a_human_review_is_not():
    assert filters.repeated_share(LOOPED) > 0.7
    assert filters.repetitive(LOOPED) == "repetitive"
    # human text repeats a phrase now and then (IMDb test, lightly edited): well under the threshold
    review = ("I loved this movie from the start. The acting is great, the story is great, and the music is "
              "great. I saw it twice in one week and I would see it again; I loved this movie from the first "
              "scene the second time too, which is rare for me, because a comedy loses its charm once you know "
              "the jokes.")
    assert 0 < filters.repeated_share(review) < filters.REPEAT_MAX
    assert filters.repetitive(review) is None
    assert filters.repetitive("great great great great great great") is None  # too short to judge


def test_first_failure_names_a_decoding_loop_with_its_share():
    from engine.strategies.base import first_failure

    spec = OutputSpec(kind="movie review", min_words=10, max_words=300)
    reason, detail = first_failure(LOOPED, spec, "stop", None)
    assert reason == "repetitive" and "5-word sequences it repeats" in detail, detail
    assert first_failure(LOOPED.split(" I am an")[0] + ".", spec, "stop", None) is None


# The edit template's rules as Qwen2.5-Coder-1.5B handed them back instead of a review (IMDb, 2026-12-07)
EDIT_RULES = ("Keep the writer's own sentences, words, names and details wherever they already fit, and rewrite the "
              "ones that do not in the writer's voice. Drop, shorten or merge a few sentences so that the result is "
              "not a copy, and add no closing verdict or recommendation that the writer did not make.")
REVIEW = ("Kevin Bacon is the star of this 1984 film, a delightful blend of humor and dance. Ren, the new kid in a "
          "town that doesn't allow dancing, sets out to change that, and the music is some of the best ever.")


def test_an_answer_that_repeats_the_prompts_rules_echoes_it_and_its_passage_is_not_counted():
    prompt = f"Edit the movie review below so that it expresses a favourable opinion. {EDIT_RULES}\n\nOriginal:\n{REVIEW}"
    assert filters.echoes_prompt(EDIT_RULES, prompt, REVIEW) == "echoes_prompt"
    assert filters.echoes_prompt(EDIT_RULES + " " + REVIEW, prompt, REVIEW) == "echoes_prompt"  # rules, then the text
    # the passage's own words are data the prompt carries: reusing them is copy_of_passage's business
    assert filters.echoes_prompt(REVIEW, prompt, REVIEW) is None
    assert filters.echoes_prompt(REVIEW, prompt) == "echoes_prompt"  # ...unless nobody says which part is data
    fresh = "A warm, funny film about a town that bans dancing; Bacon has never been better and the songs still work."
    assert filters.echoes_prompt(fresh, prompt, REVIEW) is None
    # one borrowed phrase in a long text stays under the 20 % threshold
    assert filters.echoes_prompt(fresh + " I would keep the writer's own sentences, words, names and details. " + REVIEW,
                                 prompt, REVIEW) is None
    assert filters.echoes_prompt("Keep the writer's own sentences", prompt, REVIEW) is None  # under 8 words
