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
    from components.common import learn_vocab_config, run_stage

    config = learn_vocab_config(corpus.path, vocab.path, vocab_uri, vocab_size, do_lower_case)
    if config is None:
        storage.copy(vocab_uri, vocab.path)
    else:
        run_stage("learn-vocab", config)
    vocab.metadata.update({"size": len(load_vocab(vocab.path)), "source": vocab_uri or "learned"})
