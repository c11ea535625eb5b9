"""Stage 0, the vocabulary: a given vocab.txt, or one learned from the corpus by `bert learn-vocab`."""


from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.common import base_image


@dsl.component(base_image=base_image("data"), install_kfp_package=False)
def learn_vocab(corpus: Input[Dataset], vocab_uri: str, vocab_size: int, do_lower_case: bool,
                vocab: Output[Artifact]):
    """vocab.txt: copied from vocab_uri when given, else learned from the corpus (WordPiece)."""
    from bert_core import storage
    from bert_core.tokenization import load_vocab
    from components.common import run_stage, stage_config

    if vocab_uri:
        storage.copy(vocab_uri, vocab.path)
    else:
        run_stage("learn-vocab", stage_config("learn-vocab", input_file=corpus.path, output_file=vocab.path,
                                              vocab_size=vocab_size, do_lower_case=do_lower_case))
    vocab.metadata.update({"size": len(load_vocab(vocab.path)), "source": vocab_uri or "learned"})
