"""Chat templates for checkpoints that ship without one.

The Gemma 3 270M GGUF carries no chat template (a base model), but its vocabulary has Gemma's
turn markers; a recipe that teaches it to chat uses Gemma's own turn format, so the aligned model
speaks the format its family's instruction-tuned models use. Written for this project from the
format's description: a user turn and a model turn, each opened by <start_of_turn>ROLE and closed
by <end_of_turn>; a system message is folded into the first user turn.
"""

from harness.errors import ConfigError

GEMMA_TURNS = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] | trim %}{% set turns = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{% set text = message['content'] | trim %}"
    "{% if loop.first and system %}{% set text = system + '\n\n' + text %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + text + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

TEMPLATES = {"gemma-turns": GEMMA_TURNS}


def check_template_name(name: str) -> str:
    if name not in TEMPLATES:
        raise ConfigError(f"unknown chat template {name!r}; known: {', '.join(sorted(TEMPLATES))}")
    return name


def ensure_chat_template(tokenizer, name: str) -> bool:
    """Give `tokenizer` the named template unless it has one; returns whether it was set."""
    check_template_name(name)
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = TEMPLATES[name]
    return True
