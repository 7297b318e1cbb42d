"""Inference, below training and never importing it: loading a trained model (`model_loading`) and
`hm-hf predict` (`cli`). The pipeline itself is `hm_hf.pipeline`.
"""
