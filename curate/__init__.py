"""vidcurate's curation pipeline: raw video in; single-shot clips scored, filtered, captioned and
packed into WebDataset shards out, with parquet manifests between the stages.

The stages, in order, are the table in `curate.pipeline`; each lives under `curate.stages`.
`python -m curate --help` lists the commands.
"""

__version__ = "0.1.0"
