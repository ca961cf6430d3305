"""Control tokens and chat templates: the tokens are added when missing, the template keeps a
system message that is only `<cot>`, and an exported row goes through TRL's collator into token
ids that still carry its `<cot>` placement, with loss on the assistant turn only.

Templates: the tiny factory's, and Qwen2.5-VL's and Qwen3-VL's stock templates as TRL ships them
(byte-identical to the hub's), so what holds here holds for the real checkpoints."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch

from docthink.core.vocab import COT
from docthink.train.data import read_export
from docthink.train.recipe import TrainRecipe, resolve
from docthink.train.sft import load_model, make_trainer
from docthink.train.tokens import TemplateError, add_control_tokens, check_cot_system
from tests.train.conftest import without_control_tokens


def _stock(name: str) -> str:
    from trl import chat_template_utils

    return getattr(chat_template_utils, name)


TEMPLATES = {
    "factory": None,
    "qwen2.5-vl-stock": "qwen2_5_vl_chat_template",
    "qwen3-vl-stock": "qwen3_vl_chat_template",
}


def _recipe(model: Path, data: Path, **kw: object) -> TrainRecipe:
    return resolve(TrainRecipe(model=str(model), data=data, gradient_checkpointing=False,
                               max_steps=1, **kw), cuda=False)  # type: ignore[arg-type]


def test_missing_control_tokens_are_added_and_the_embeddings_grow(tiny, tmp_path: Path) -> None:
    bare = without_control_tokens(tiny["qwen2.5-vl"], tmp_path / "bare")
    model, processor = load_model(_recipe(bare, tmp_path))
    old = model.get_input_embeddings().weight.detach().clone()
    assert processor.tokenizer.tokenize(COT) != [COT]
    setup = add_control_tokens(model, processor)
    assert setup.added == (COT, "<think>", "</think>")
    assert (setup.rows_before, setup.rows_after) == (old.shape[0], old.shape[0] + 3)
    assert setup.ids == {COT: old.shape[0], "<think>": old.shape[0] + 1, "</think>": old.shape[0] + 2}
    grown = model.get_input_embeddings().weight.detach()
    assert torch.equal(grown[: old.shape[0]], old)
    assert model.get_output_embeddings().weight.shape[0] == old.shape[0] + 3
    # normal tokens: a decode that skips special tokens keeps the trace's delimiters
    ids = processor.tokenizer.encode(f"{COT} Q <think>t</think>", add_special_tokens=False)
    assert processor.tokenizer.decode(ids, skip_special_tokens=True) == f"{COT} Q <think>t</think>"
    # a tokenizer that has them is left alone
    again = add_control_tokens(model, processor)
    assert again.added == () and again.rows_after == again.rows_before == old.shape[0] + 3


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_templates_keep_a_system_message_that_is_only_cot(tiny, template: str) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny["qwen2.5-vl"])
    name = TEMPLATES[template]
    rendered = check_cot_system(processor, None if name is None else _stock(name))
    assert f"<|im_start|>system\n{COT}<|im_end|>" in rendered


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        (("{% for m in messages %}{% if m.role != 'system' %}<|im_start|>{{ m.role }}\n"
          "{{ m.content[0].text }}<|im_end|>\n{% endif %}{% endfor %}"), "drops the system message"),
        (("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'system' %}You are a "
          "helpful assistant. {% endif %}{{ m.content[0].text }}<|im_end|>\n{% endfor %}"),
         "adds text to a system message"),
        # Mistral-style: the system text goes into the first user turn
        (("{% set sys = messages[0].content[0].text if messages[0].role == 'system' else '' %}"
          "{% for m in messages if m.role != 'system' %}<|im_start|>{{ m.role }}\n"
          "{% if sys %}{{ sys }}\n\n{% endif %}{{ m.content[0].text }}<|im_end|>\n{% endfor %}"),
         "adds text to a system message"),
        (("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content[0].text | "
          "replace('<cot>', '') }}<|im_end|>\n{% endfor %}"), "does not keep a system message"),
    ],
    ids=["drops-system", "default-prompt", "into-user-turn", "strips-cot"],
)
def test_templates_that_lose_the_switch_are_refused(tiny, template: str, problem: str) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny["qwen2.5-vl"])
    with pytest.raises(TemplateError, match=problem):
        check_cot_system(processor, template)


_IMAGE = re.compile(r"<\|vision_start\|>(?:<\|image_pad\|>)+<\|vision_end\|>")
_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", re.DOTALL)


@pytest.mark.parametrize("loss_mask", ["completion", "assistant_markers"])
@pytest.mark.parametrize(("family", "template"), [
    ("qwen2.5-vl", "factory"), ("qwen2.5-vl", "qwen2.5-vl-stock"),
    ("qwen3-vl", "factory"), ("qwen3-vl", "qwen3-vl-stock"),
])
def test_a_training_batch_keeps_each_placement_and_masks_all_but_the_answer(
    tiny, export: Path, tmp_path: Path, family: str, template: str, loss_mask: str
) -> None:
    """export -> Parquet -> TRL's collator -> token ids -> text: the `<cot>` placement (system
    message, prefix, suffix, none) is where the export put it, once, as one token; labels are
    -100 everywhere but the assistant's answer and its end-of-turn token."""
    rows = read_export(export)
    recipe = _recipe(tiny[family], export, loss_mask=loss_mask)
    model, processor = load_model(recipe)
    if TEMPLATES[template] is not None:
        processor.chat_template = _stock(TEMPLATES[template])
    tokens = add_control_tokens(model, processor)
    check_cot_system(processor)
    trainer = make_trainer(model, processor, rows, recipe, tmp_path, logging.getLogger("t"), tokens)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    tok = processor.tokenizer
    cot_id, think_id = tok.convert_tokens_to_ids(COT), tok.convert_tokens_to_ids("<think>")
    for i, row in enumerate(rows):
        keep = batch["attention_mask"][i].bool()
        ids, labels = batch["input_ids"][i][keep], batch["labels"][i][keep]
        text = _IMAGE.sub("[page]", tok.decode(ids, skip_special_tokens=False))
        turns = _TURN.findall(text)
        system = [c for r, c in turns if r == "system"]
        (user,) = [c for r, c in turns if r == "user"]
        (answer,) = [c for r, c in turns if r == "assistant"]
        question = row.question
        head = f"{COT} " if row.placement == "prefix" else ""  # the first words of the user turn
        assert user == head + "Page 1:[page]Page 2:[page]Page 3:[page]" + question or (
            row.id == "plain:q9" and user == "Page 1:[page]Page 2:[page]" + question)
        assert answer == row.answer
        assert (ids == cot_id).sum().item() == (row.placement != "none")
        if row.placement == "system":
            assert system == [COT]
        else:
            assert all(COT not in s for s in system)
        assert {"prefix": user.startswith(f"{COT} Page 1:"),
                "suffix": question.endswith(f" {COT}")}.get(row.placement, COT not in user)
        # loss: exactly the answer and its end-of-turn token (TRL's completion also keeps the
        # newline the template writes after it)
        trained = (labels != -100).nonzero().flatten()
        first = trained[0].item()
        assert torch.equal(trained, torch.arange(first, first + len(trained)))
        assert tok.decode(ids[:first], skip_special_tokens=False).endswith("<|im_start|>assistant\n")
        target = tok.decode(labels[trained], skip_special_tokens=False)
        assert target in (row.answer + "<|im_end|>", row.answer + "<|im_end|>\n")
        assert (labels[first].item() == think_id) == row.think


def test_completion_masking_refuses_a_template_that_is_not_prefix_preserving(
    tiny, export: Path, tmp_path: Path
) -> None:
    """A generation cue the full conversation does not contain (as Qwen3's thinking templates
    write `<think>\\n`) would shift the completion mask: refused, pointing at the alternative."""
    recipe = _recipe(tiny["qwen2.5-vl"], export, loss_mask="completion")
    model, processor = load_model(recipe)
    processor.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{% for c in m.content %}"
        "{% if c.type == 'text' %}{{ c.text }}{% else %}<|vision_start|><|image_pad|>"
        "<|vision_end|>{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
    )
    tokens = add_control_tokens(model, processor)
    with pytest.raises(TemplateError, match="use loss_mask: assistant_markers"):
        make_trainer(model, processor, read_export(export), recipe, tmp_path,
                     logging.getLogger("t"), tokens)
