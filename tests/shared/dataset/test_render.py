"""The shared rendering equals transformers' apply_chat_template on every reference row."""

import sys
import subprocess

from ktoforge.dataset import ChatTemplate, load_examples, render_row
from ktoforge.dataset.render import merge_system


def test_render_matches_transformers_on_reference(reference_dataset, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = ChatTemplate.from_dir(tiny_model_dir)
    examples = load_examples(reference_dataset)
    assert len(examples) == 1000
    for ex in examples:
        prompt_text, completion_text = render_row(ex.prompt, ex.completion, template)
        expected = tok.apply_chat_template(merge_system(ex.prompt) + [ex.completion], tokenize=False)
        assert prompt_text + completion_text == expected
        assert prompt_text == tok.apply_chat_template(merge_system(ex.prompt), tokenize=False,
                                                      add_generation_prompt=True)


def test_system_merged_into_first_user_turn_for_mistral(tiny_model_dir):
    template = ChatTemplate.from_dir(tiny_model_dir)
    assert template.system_role is False
    prompt, completion = render_row(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        {"role": "assistant", "content": "Hello"}, template)
    assert prompt == "<s>[INST] Be brief.\n\nHi[/INST]"
    assert completion == " Hello</s>"


def test_rendering_imports_no_torch(tiny_model_dir):
    code = ("import sys; from ktoforge.dataset import ChatTemplate, render_row;"
            f"t = ChatTemplate.from_dir({str(tiny_model_dir)!r});"
            "render_row([{'role':'user','content':'a'}], {'role':'assistant','content':'b'}, t);"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
