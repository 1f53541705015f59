"""`harness sae train --eval-tokens` evaluates on the corpus given with --corpus (issue 17), and
its summary puts CE loss recovered and KL next to explained variance."""

import itertools
import json

from tests.probes.sae_tiny import save_hf_folder

HOOK = "blocks.0.hook_resid_post"


def test_eval_tokens_read_the_given_corpus(tmp_path, capsys):
    from apps.cli import main
    from harness.data import stdlib_docs

    folder = save_hf_folder(tmp_path / "tiny")
    corpus = tmp_path / "my-corpus.jsonl"
    docs = itertools.islice(stdlib_docs.documents(), 400, 1400)
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    runs = tmp_path / "runs"
    assert main(["sae", "train", "--model", str(folder), "--corpus", str(corpus), "--runs", str(runs), "--hook", HOOK,
                 "--arch", "topk", "--d-sae", "32", "--k", "4", "--tokens", "2k", "--batch-tokens", "512",
                 "--out", "s", "--eval-tokens", "512", "--context-length", "32"]) == 0
    out = capsys.readouterr().out
    assert f"held-out tokens of {corpus}" in out and "stdlib-docs" not in out
    head = next(line for line in out.splitlines() if line.startswith("on ") and "positions the SAE is for" in line)
    assert "explained_variance" in head and "ce_loss_recovered" in head and "kl_div" in head
    manifest = json.loads((runs / "s" / "manifest.json").read_text())
    assert manifest["config"]["source"]["corpus"]["name"] == str(corpus) or "my-corpus" in json.dumps(manifest["config"])
    assert manifest["metrics"]["eval/n_tokens"] > 0 and "eval/ce_loss_recovered" in manifest["metrics"]
