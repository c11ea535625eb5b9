"""Corpus preparation: the text users have (Wikipedia dumps, plain text, JSON lines; compressed; local or
object storage) -> BERT's corpus format (one sentence a line, a blank line between documents).

readers.py  inputs: formats, compression, globs and lists, detection, one-line errors
wiki.py     MediaWiki XML dumps (plain and multistream): pages, and wikitext -> paragraphs
segment.py  paragraphs -> sentences (blingfire, chosen by measurement: docs/data.md)
clean.py    normalisation, control characters, minimum length, exact duplicates, the drop report
prepare.py  `bert prepare-corpus`: shards, worker processes, resume, progress
"""
