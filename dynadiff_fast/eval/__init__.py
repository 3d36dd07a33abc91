"""dynadiff_fast.eval"""
