"""vidcurate's trainer (video diffusion from WebDataset shards): not built yet, see issue 6."""
