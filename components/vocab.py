"""Stage 0, the vocabulary: a given vocab.txt, or one learned from the corpus by `bert learn-vocab`."""


from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from components.common import base_image


@dsl.component(base_image=base_image("data"), install_kfp_package=False)
def learn_vocab(corpus: Input[Dataset], vocab_uri: str, vocab_size: int, do_lower_case: bool,
                vocab: Output[Artifact], report: Output[HTML]):
    """vocab.txt: copied from vocab_uri when given, else learned from the corpus (WordPiece); the HTML
    report: its size, special tokens, pieces' lengths and how it tokenizes the corpus."""
    from bert_core import storage
    from bert_core.reports import vocab_report
    from bert_core.tokenization import load_vocab
    from components.common import learn_vocab_config, run_stage, write_report

    config = learn_vocab_config(corpus.path, vocab.path, vocab_uri, vocab_size, do_lower_case)
    if config is None:
        storage.copy(vocab_uri, vocab.path)
    else:
        run_stage("learn-vocab", config)
    vocab.metadata.update({"size": len(load_vocab(vocab.path)), "source": vocab_uri or "learned"})
    write_report(report, vocab_report, vocab.path, [corpus.path], do_lower_case)
