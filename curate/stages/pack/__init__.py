"""The pack stage: `stage` re-encodes kept clips (`encoding`), `writer` puts them into WebDataset shards."""
