"""A worked example of a task module (bert_core.tasks): movie-review snippets labelled pos or neg.

    bert finetune --task_module=examples/tasks/movie_reviews.py --task_name=movie_reviews \
        --data_dir=examples/tasks/movie_reviews_data --vocab_file=... --init_checkpoint=... \
        --do_train --do_eval --do_predict --output_dir=out
    bert evaluate --task_module=examples/tasks/movie_reviews.py --task_name=movie_reviews \
        --data_dir=examples/tasks/movie_reviews_data --eval_split=test \
        --predictions_file=out/test_results.tsv --output_dir=out/eval

The data is not in GLUE's layout, which is why it needs a processor: one file,
movieReviewSnippets_GroundTruth.txt, whose lines are `id <TAB> mean rating <TAB> snippet`, the rating
the mean of human ratings from -4 (most negative) to +4. This is the ground truth of Hutto and
Gilbert's VADER paper (ICWSM 2014) for the Pang and Lee movie-review sentences, shipped in the sdist
of PyPI vaderSentiment 3.3.2 (additional_resources/hutto_ICWSM_2014.tar.gz, MIT license);
examples/tasks/movie_reviews_data/ holds its lines 1-300 and 5301-5600 (the file lists the positive
snippets first). The whole file (10,605 snippets) works the same way.

The label is the rating's sign (a rating of exactly 0 is left out); the split is fixed by the id, so
every run and every rank sees the same one: id mod 10 = 8 is dev, 9 is test, the rest train. The
test split keeps its labels, so `bert evaluate` can score the test predictions (as the pipeline does).
"""

import os

from bert_core.tasks import DataProcessor, InputExample, register

FILE = "movieReviewSnippets_GroundTruth.txt"


@register("movie_reviews")
class MovieReviewsProcessor(DataProcessor):
    def get_train_examples(self, data_dir):
        return self._examples(data_dir, "train")

    def get_dev_examples(self, data_dir):
        return self._examples(data_dir, "dev")

    def get_test_examples(self, data_dir):
        return self._examples(data_dir, "test")

    def get_labels(self):
        return ["neg", "pos"]

    def _examples(self, data_dir, split):
        examples = []
        for snippet_id, rating, text in self._read_tsv(os.path.join(data_dir, FILE)):
            rating = float(rating)
            if rating == 0 or _split(int(snippet_id)) != split:
                continue
            examples.append(InputExample(guid=f"{split}-{snippet_id}", text_a=text.strip(),
                                         label="pos" if rating > 0 else "neg"))
        return examples


def _split(snippet_id):
    return {8: "dev", 9: "test"}.get(snippet_id % 10, "train")
