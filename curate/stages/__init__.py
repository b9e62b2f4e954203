"""One module (or subpackage, when it has helpers) per stage; `base` and `clipstage` are what they share.

Which stages run, in which order, is `curate.pipeline`'s table.
"""
