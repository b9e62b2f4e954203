"""vidcurate's curation pipeline: split raw video into single-shot clips with parquet manifests."""

__version__ = "0.1.0"
