"""Model wrappers: how weights are found, downloaded and loaded, apart from the stages that use them.

Nothing here is imported by `curate.models` itself, so `import curate.models.errors` stays free of
torch; each wrapper module imports its heavy dependencies when it is imported.
"""
