"""dynadiff_fast.generative"""
