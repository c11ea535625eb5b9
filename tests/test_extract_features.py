"""`bert extract-features` on all-MiniLM-L6-v2: the JSONL layout of Google's extract_features.py, and values
equal to the encoder's layer outputs (ours, and Hugging Face's hidden states as an independent check)."""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tests.conftest import one_line_error, run_bert  # noqa: E402
from tests.test_finetune import QUIET  # noqa: E402

SENTENCES = ["The quick brown fox jumps over the lazy dog.",
             "Who was Jim Henson? ||| Jim Henson was a puppeteer.",
             "Naïve café owners don't like   unusual spacing!"]
SEQ = 24


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, minilm_dir):
    d = tmp_path_factory.mktemp("features")
    (d / "input.txt").write_text("\n".join(SENTENCES) + "\n")
    proc = run_bert("extract-features", f"--input_file={d}/input.txt", f"--output_file={d}/out.jsonl",
                    f"--vocab_file={minilm_dir}/vocab.txt", f"--init_checkpoint={minilm_dir}",
                    "--layers=-1,-2,0", f"--max_seq_length={SEQ}", "--batch_size=2", env=QUIET)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(l) for l in (d / "out.jsonl").read_text().splitlines()]


def test_layout_matches_googles(extracted, minilm_dir):
    from bert_core.tokenization import FullTokenizer

    tok = FullTokenizer(f"{minilm_dir}/vocab.txt")
    assert [r["linex_index"] for r in extracted] == [0, 1, 2]
    for record, line in zip(extracted, SENTENCES):
        parts = [p.strip() for p in line.split("|||")]
        expected = ["[CLS]"] + tok.tokenize(parts[0]) + ["[SEP]"]
        if len(parts) == 2:
            expected += tok.tokenize(parts[1]) + ["[SEP]"]
        assert [f["token"] for f in record["features"]] == expected
        for f in record["features"]:
            assert [l["index"] for l in f["layers"]] == [-1, -2, 0]
            assert all(len(l["values"]) == 384 for l in f["layers"])


def _inputs(tokens_per_line, minilm_dir):
    from bert_core.tokenization import FullTokenizer

    tok = FullTokenizer(f"{minilm_dir}/vocab.txt")
    n = len(tokens_per_line)
    ids, mask, seg = (np.zeros((n, SEQ), np.int32) for _ in range(3))
    for i, tokens in enumerate(tokens_per_line):
        ids[i, :len(tokens)] = tok.convert_tokens_to_ids(tokens)
        mask[i, :len(tokens)] = 1
        first_sep = tokens.index("[SEP]")
        seg[i, first_sep + 1:len(tokens)] = 1
    return ids, mask, seg


def test_values_are_the_encoder_outputs(extracted, minilm_dir):
    from bert_core.checkpoints import load_hf_safetensors
    from bert_core.config import BertConfig
    from bert_core.modeling import BertModel

    tokens = [[f["token"] for f in r["features"]] for r in extracted]
    ids, mask, seg = _inputs(tokens, minilm_dir)
    model = BertModel(BertConfig.from_json_file(f"{minilm_dir}/config.json"))
    model.build()
    load_hf_safetensors(model, minilm_dir, strict=False)
    # In the command's batches of 2, so the float32 arithmetic is the same.
    layers = [np.concatenate(parts) for parts in zip(*(
        [x.numpy() for x in model({"input_ids": ids[s:s + 2], "input_mask": mask[s:s + 2],
                                   "segment_ids": seg[s:s + 2]})["encoder_outputs"]] for s in range(0, len(ids), 2)))]
    for i, record in enumerate(extracted):
        for pos, f in enumerate(record["features"]):
            for layer in f["layers"]:
                want = layers[layer["index"]][i, pos]
                # rounded to 6 decimals as Google writes them (5e-7), plus float32 noise on activations up to ~10
                np.testing.assert_allclose(layer["values"], want, atol=3e-6, rtol=1e-5)


def test_values_match_hugging_face_hidden_states(extracted, minilm_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    tokens = [[f["token"] for f in r["features"]] for r in extracted]
    ids, mask, seg = _inputs(tokens, minilm_dir)
    hf = transformers.BertModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        out = hf(input_ids=torch.from_numpy(ids.astype(np.int64)), attention_mask=torch.from_numpy(mask.astype(np.int64)),
                 token_type_ids=torch.from_numpy(seg.astype(np.int64)), output_hidden_states=True)
    hidden = out.hidden_states[1:]  # [0] is the embeddings; Google's layer indexes count transformer layers
    for i, record in enumerate(extracted):
        for pos, f in enumerate(record["features"]):
            for layer in f["layers"]:
                np.testing.assert_allclose(layer["values"], hidden[layer["index"]][i, pos].numpy(), atol=2e-4, rtol=0)


def test_bad_input_is_one_line(tmp_path, minilm_dir):
    (tmp_path / "in.txt").write_text("a ||| b ||| c\n")
    base = [f"--output_file={tmp_path}/o.jsonl", f"--vocab_file={minilm_dir}/vocab.txt",
            f"--init_checkpoint={minilm_dir}"]
    line = one_line_error(run_bert("extract-features", f"--input_file={tmp_path}/in.txt", *base, env=QUIET))
    assert "in.txt:1: expected at most one '|||'" in line
    (tmp_path / "in.txt").write_text("fine\n")
    line = one_line_error(run_bert("extract-features", f"--input_file={tmp_path}/in.txt", *base, "--layers=-7",
                                   env=QUIET))
    assert "--layers: [-7] out of range for a model with 6 layers" in line
    line = one_line_error(run_bert("extract-features", f"--input_file={tmp_path}/in.txt", *base, "--layers=last",
                                   env=QUIET))
    assert "--layers" in line
    assert not (tmp_path / "o.jsonl").exists()
